"""The container files (issue 5), checked without a Docker engine: the
compose file validates with docker-compose (with a .env made from
.env.example), the runtime image installs a package for every library rtwsd
and rtws-token link and no -dev package, runs as a non-root user, publishes
8000 and listens on 0.0.0.0, and its HEALTHCHECK script reports an admin
listener's /healthz status correctly."""

import http.server
import re
import shutil
import socket
import threading

from pkgtest import *

DOCKERFILE = os.path.join(SRCDIR, "docker", "Dockerfile")
HEALTHCHECK = os.path.join(SRCDIR, "docker", "rtwsd-healthcheck")
COMPOSE = os.path.join(SRCDIR, "docker-compose.yml")


# --- docker-compose.yml -------------------------------------------------------
compose = shutil.which("docker-compose")
if not compose:
    log("note: docker-compose is not installed; the compose file is not validated")
else:
    with TempDir() as t:
        shutil.copy(COMPOSE, t)
        shutil.copy(os.path.join(SRCDIR, ".env.example"), os.path.join(t, ".env"))
        rc, out = run([compose, "-f", "docker-compose.yml", "config"], cwd=t, timeout=120)
        check(rc == 0, "docker-compose config accepts docker-compose.yml", tail(out))
        rc, services = run([compose, "-f", "docker-compose.yml", "config", "--services"],
                           cwd=t, timeout=120)
        check(sorted(services.split()) == ["redis", "rtwsd"],
              "the compose file has the services rtwsd and redis", services)
        for text, why in (
                ("127.0.0.1:8000:8000", "rtwsd is published on the host's loopback only"),
                ("condition: service_healthy", "rtwsd starts once Redis answers"),
                ("REDIS_URL: redis://redis:6379", "rtwsd uses the redis service"),
                ("dockerfile: docker/Dockerfile", "rtwsd is built from docker/Dockerfile"),
                ("- redis-cli", "Redis is health-checked with redis-cli ping")):
            check(text in out, f"docker-compose config shows {text!r} ({why})")

# --- docker/Dockerfile ------------------------------------------------------------
with open(DOCKERFILE, encoding="utf-8") as f:
    dockerfile = f.read()
stages = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
check(len(stages) == 2 and all(s.startswith("debian:12-slim") for s in stages),
      "the Dockerfile has two stages, both on debian:12-slim")
runtime = stages[-1] if stages else ""
installed = set()
for m in re.finditer(r"apt-get install ([^&\n]*)", runtime.replace("\\\n", " ")):
    installed |= {w for w in m.group(1).split() if not w.startswith("-")}
log(f"     runtime packages: {' '.join(sorted(installed))}")
check(installed and not any(p.endswith("-dev") for p in installed),
      "the runtime stage installs no -dev package", str(sorted(installed)))

if shutil.which("readelf") and shutil.which("dpkg"):
    for prog in ("rtwsd", "rtws-token"):
        path = os.path.join(BUILDDIR, prog)
        if not os.path.exists(path):
            continue
        rc, out = run(["readelf", "-d", path])
        for lib in re.findall(r"\(NEEDED\).*\[(.+)\]", out):
            rc, owner = run(["dpkg", "-S", f"*/{lib}"])
            pkg = owner.split(":")[0].strip() if rc == 0 else "?"
            if pkg == "libc6":      # in every Debian image
                continue
            if pkg in ("libasan8", "libubsan1"):
                continue            # an --enable-sanitizers build; the image is not one
            check(pkg in installed, f"the runtime stage installs {pkg}, "
                  f"which provides {lib} for {prog}")

check(re.search(r"^USER (?!0\b|root\b)\S+", runtime, re.M),
      "the image runs as a non-root user")
check(re.search(r"^EXPOSE 8000\b", runtime, re.M), "the image exposes port 8000")
check(re.search(r"\bHOST=0\.0\.0\.0\b", runtime), "the image listens on every interface")
check(re.search(r"\bADMIN_PORT=9100\b", runtime), "the image sets ADMIN_PORT=9100")
check(re.search(r"^HEALTHCHECK\b.*rtwsd-healthcheck", runtime, re.M | re.S),
      "the image has a HEALTHCHECK")
check("make install-strip DESTDIR=/out" in dockerfile or "make install DESTDIR=/out" in dockerfile,
      "the build stage installs into a staging directory")
with open(os.path.join(SRCDIR, ".dockerignore"), encoding="utf-8") as f:
    ignored = f.read().split()
check(".git" in ignored and ".env" in ignored,
      ".dockerignore keeps .git and the secrets in .env out of the build context")


# --- docker/rtwsd-healthcheck against a stand-in admin listener ------------------
class Admin(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        code = Admin.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if not shutil.which("bash") or not shutil.which("timeout"):
    log("note: bash or timeout missing; the health check script is not run")
else:
    server = http.server.HTTPServer(("127.0.0.1", 0), Admin)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = clean_env(ADMIN_HOST="127.0.0.1", ADMIN_PORT=str(port))
    rc, out = run(["bash", HEALTHCHECK], env=env, timeout=30)
    check(rc == 0, "the health check passes when /healthz answers 200", out)
    Admin.status = 503
    rc, out = run(["bash", HEALTHCHECK], env=env, timeout=30)
    check(rc == 1, "the health check fails when /healthz answers 503", f"status {rc}: {out}")
    server.shutdown()
    server.server_close()
    with socket.socket() as s:     # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    rc, out = run(["bash", HEALTHCHECK], env=clean_env(ADMIN_PORT=str(closed)), timeout=30)
    check(rc == 1, "the health check fails when nothing listens", f"status {rc}: {out}")
finish()
