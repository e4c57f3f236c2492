"""pkgtest - what the packaging tests share.

Each test file under tests/packaging/ checks one part of issue 5 (install
layout, systemd unit, config files, Debian package) and follows the exit
status convention of the other tests: 0 pass, 77 skip, 1 fail.

They never write into the source tree (read-only under "make distcheck"):
staged installs and copies go to a temporary directory that is removed at
the end, even on failure.
"""

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("RTWS_TOP_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
BUILDDIR = os.environ.get("RTWS_TOP_BUILDDIR") or SRCDIR
MAKE = os.environ.get("RTWS_MAKE") or "make"
# Empty when configure was given --with-systemdsystemunitdir=no.
UNITDIR = os.environ.get("RTWS_SYSTEMDUNITDIR", "")

# Every variable rtwsd reads: docs/PROTOCOL.md section 1 plus the extras
# rtwsd added (README "Configuration", src/config.c), in the order of the
# s_vars table (the order "rtwsd --check-config" prints them in). Kept by
# hand on purpose: test_config_files.py also checks it against "rtwsd
# --help", so a variable added to the daemon but not here is caught there.
VARIABLES = [
    "HOST", "PORT", "JWT_SECRET", "JWT_ALG", "JWT_PUBLIC_KEY_FILE",
    "JWT_AUDIENCE", "JWT_ISSUER", "REDIS_URL", "REDIS_OUTBOX_SIZE",
    "ALLOWED_ORIGINS", "PRESENCE_TTL", "HEARTBEAT_INTERVAL", "IDLE_TIMEOUT",
    "MAX_MESSAGE_SIZE", "MAX_QUEUE_BYTES", "MAX_QUEUE_MESSAGES", "LOG_LEVEL",
    "PERMESSAGE_DEFLATE", "RATE_LIMIT", "RATE_BURST", "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_IP", "HANDSHAKE_TIMEOUT", "ADMIN_HOST", "ADMIN_PORT",
    "DRAIN_TIMEOUT", "LOG_FORMAT", "GATEWAY_THREADS",
]

_failures = []


def log(msg):
    print(msg, flush=True)


def check(cond, what, detail=""):
    """Records one assertion; `what` names the behaviour it protects."""
    if cond:
        log(f"ok   {what}")
    else:
        log(f"FAIL {what}" + (f": {detail}" if detail else ""))
        _failures.append(what)
    return cond


def skip(reason):
    log(f"SKIP {reason}")
    sys.exit(77)


def finish():
    if _failures:
        log(f"{len(_failures)} check(s) failed")
        sys.exit(1)
    sys.exit(0)


def clean_env(**extra):
    """The environment for a nested make or build: without the outer make's
    jobserver and flags, which do not carry over to a child started here."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES",
                        "DESTDIR", "GNUMAKEFLAGS")}
    env.update(extra)
    return env


def run(cmd, timeout=600, **kw):
    """Runs cmd, returns (status, combined output)."""
    kw.setdefault("env", clean_env())
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        out = e.stdout or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        return -1, out + f"\n(timed out after {timeout} s)"
    return p.returncode, p.stdout


def tail(text, lines=30):
    return "\n".join(text.rstrip().splitlines()[-lines:])


class TempDir:
    """A temporary directory removed when the `with` block ends."""

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="rtws-pkg-")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
        return False


def make_in_build_tree(*args):
    """Runs make in the build tree, one such make at a time: "make check -j"
    runs these tests side by side, and each install rewrites the unit in the
    build tree with its own paths. The lock is on the build tree's Makefile,
    so no lock file is left behind."""
    with open(os.path.join(BUILDDIR, "Makefile"), "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return run([MAKE, "-C", BUILDDIR] + list(args))


def staged_install(destdir, prefix="/usr", sysconfdir="/etc", target="install"):
    """make install (or uninstall) into destdir from the build tree."""
    return make_in_build_tree(target, f"DESTDIR={destdir}",
                              f"prefix={prefix}", f"sysconfdir={sysconfdir}")


def staged_files(destdir):
    """Every file under destdir, as absolute paths of the installed system."""
    found = []
    for root, _dirs, files in os.walk(destdir):
        for f in files:
            found.append(os.path.join(root, f)[len(destdir):])
    return sorted(found)


def find_unit(destdir):
    """The staged rtwsd.service paths (systemd/system directory, any prefix)."""
    return [f for f in staged_files(destdir)
            if re.search(r"/systemd/system/rtwsd\.service$", f)]


def settings_file_names(path):
    """The variable names a KEY=value file lists, commented out or not."""
    names = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^#?([A-Z][A-Z0-9_]*)=", line)
            if m:
                names.append(m.group(1))
    return names
