"""rtwsd under the unit's address-family sandbox (issue 5): with socket()
refused for every family the unit's RestrictAddressFamilies= does not name
(the seccomp filter systemd installs for it, rebuilt here), and as an
unprivileged user when the test runs as root, rtwsd starts, listens on the
configured HOST and nowhere else, and drains and exits 0 on SIGTERM.

Why: libwebsockets 4.1 resolves HOST with getifaddrs(), which needs
AF_NETLINK; without it lws silently binds every interface, so a
loopback-only configuration would be exposed to the network."""

import ctypes
import platform
import re
import signal
import socket
import subprocess
import time

from pkgtest import *

UNIT_IN = os.path.join(SRCDIR, "systemd", "rtwsd.service.in")
RTWSD = os.environ.get("RTWSD") or os.path.join(BUILDDIR, "rtwsd")
SYS_SOCKET = {"x86_64": 41, "aarch64": 198}.get(platform.machine())
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(platform.machine())

if SYS_SOCKET is None:
    skip(f"no socket() syscall number known for {platform.machine()}")
if not os.access(RTWSD, os.X_OK):
    skip(f"{RTWSD} is not built")

with open(UNIT_IN, encoding="utf-8") as f:
    m = re.search(r"^RestrictAddressFamilies=(.*)$", f.read(), re.M)
if not check(m is not None, "the unit restricts address families"):
    finish()
families = [getattr(socket, name) for name in m.group(1).split()]
log(f"     allowed families: {m.group(1)}")


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte),
                ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def address_family_filter(allowed):
    """BPF: socket(family, ...) fails with EAFNOSUPPORT unless family is allowed."""
    LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06
    ALLOW, ERRNO = 0x7FFF0000, 0x00050000
    n = len(allowed)
    prog = [(LD_W_ABS, 0, 0, 4),                         # seccomp_data.arch
            (JEQ_K, 1, 0, AUDIT_ARCH),
            (RET_K, 0, 0, ALLOW),
            (LD_W_ABS, 0, 0, 0),                         # seccomp_data.nr
            (JEQ_K, 1, 0, SYS_SOCKET),
            (RET_K, 0, 0, ALLOW),
            (LD_W_ABS, 0, 0, 16)]                        # args[0], low word
    for i, family in enumerate(allowed):
        prog.append((JEQ_K, n - i, 0, family))          # to the final ALLOW
    prog += [(RET_K, 0, 0, ERRNO | 97),                 # EAFNOSUPPORT
             (RET_K, 0, 0, ALLOW)]
    return (SockFilter * len(prog))(*[SockFilter(*ins) for ins in prog])


FILTER = address_family_filter(families)
LIBC = ctypes.CDLL(None, use_errno=True)
AS_ROOT = os.geteuid() == 0


def sandbox():
    """In the child: unprivileged user (when root), no new privileges, filter."""
    if AS_ROOT:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    prog = SockFprog(len(FILTER), FILTER)
    if LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
       LIBC.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        os._exit(126)


def listeners(port):
    """Local addresses in LISTEN state on port, from /proc/net/tcp{,6}."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                found.append(addr)
    return found


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


port = free_port()
env = clean_env(HOST="127.0.0.1", PORT=str(port), LOG_LEVEL="info")
for name in list(env):
    if name.startswith(("JWT_", "REDIS_", "ALLOWED_")):
        del env[name]
try:
    proc = subprocess.Popen([RTWSD], env=env, preexec_fn=sandbox, cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
except PermissionError:
    if not AS_ROOT:
        raise
    # The build tree is not reachable by nobody (a private home): keep root,
    # the address-family filter is what this test is about.
    log("note: the build tree is not readable by nobody; rtwsd runs as root")
    AS_ROOT = False
    proc = subprocess.Popen([RTWSD], env=env, preexec_fn=sandbox, cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
try:
    deadline = time.monotonic() + 10
    found = []
    while time.monotonic() < deadline and proc.poll() is None:
        found = listeners(port)
        if found:
            break
        time.sleep(0.05)
    check(proc.poll() is None and found,
          "rtwsd starts and listens under the unit's address-family restriction"
          + (" as an unprivileged user" if AS_ROOT else ""),
          f"exit status {proc.poll()}")
    check(found and set(found) == {"0100007F"},
          "with HOST=127.0.0.1 it listens on 127.0.0.1 only, not on every interface",
          f"listening on {found}")
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        check(rc == 0, "rtwsd exits 0 on SIGTERM inside the sandbox", f"status {rc}")
finally:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    out = proc.stdout.read().decode(errors="replace")
    log("     rtwsd log:\n" + "\n".join("       " + l for l in out.splitlines()[-8:]))
finish()
