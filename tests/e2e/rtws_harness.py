"""rtws_harness - what every end-to-end test of rtwsd shares.

The tests drive the real rtwsd binary ($RTWSD) over 127.0.0.1 with an
independent client (Debian's python3-websockets 10.4, or raw bytes written
here), and check it against docs/PROTOCOL.md. Nothing here borrows the
server's code: tokens are minted with hmac, frames are built by hand.

Three promises this module keeps, because a test suite that leaks daemons or
hangs is worse than none:

  * every rtwsd runs in its own process group and is killed (SIGTERM, then
    SIGKILL) when its `with` block ends, at interpreter exit, on SIGTERM /
    SIGHUP, and when the whole-file watchdog (SIGALRM) fires;
  * every wait has a deadline (asyncio.wait_for); no sleep stands in for
    "let things settle";
  * a failure names the behaviour it protects and shows the server log tail.

Multi-node tests add a real redis-server (RedisServer, same promises, and
it also dies with this process through PR_SET_PDEATHSIG) and several rtwsd
nodes on it (Cluster).

Usage in a test file:

    from rtws_harness import *
    async def test_something():
        with Server({"MAX_MESSAGE_SIZE": "1024"}) as srv:
            ws = await connect(srv.port, "r1")
            ...
            check(cond, "what behaviour this protects")
    if __name__ == "__main__":
        main([test_something])
"""

import asyncio
import atexit
import base64
import ctypes
import hashlib
import hmac
import inspect
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import websockets
import websockets.exceptions

__all__ = [
    "RTWSD", "RTWS_TOKEN", "RTWS_FIXTURES", "SECRET", "HEX32",
    "free_port", "Server", "run_once", "REDIS_SERVER", "RedisServer", "Cluster",
    "poll_until", "numsub", "wait_numsub", "presence_key", "recv_until",
    "b64url", "b64url_decode", "mint", "mint_none", "tamper_payload",
    "tamper_signature", "decode_jwt",
    "connect", "recv_json", "recv_frame_json", "expect_close", "expect_silence_then",
    "ping_ack", "expect_rejected", "expect_accepted",
    "RawConn", "ws_frame", "ws_mask", "http_request", "ws_upgrade_request", "http_get",
    "check", "check_eq", "require", "Failure", "main", "skip",
    "websockets",
]

SECRET = "test-secret"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_HERE = os.path.dirname(os.path.abspath(__file__))
_TOP = os.path.dirname(os.path.dirname(_HERE))
RTWSD = os.environ.get("RTWSD") or os.path.join(_TOP, "rtwsd")
RTWS_TOKEN = os.environ.get("RTWS_TOKEN") or os.path.join(_TOP, "rtws-token")
RTWS_FIXTURES = os.environ.get("RTWS_FIXTURES") or os.path.join(_TOP, "tests", "fixtures")
REDIS_SERVER = os.environ.get("REDIS_SERVER") or "/usr/bin/redis-server"

# Variables rtwsd reads: never inherited from the caller's environment, so a
# developer's shell cannot change what a test means.
_CONFIG_VARS = (
    "HOST", "PORT", "JWT_SECRET", "JWT_ALG", "JWT_PUBLIC_KEY_FILE",
    "JWT_AUDIENCE", "JWT_ISSUER", "REDIS_URL", "ALLOWED_ORIGINS",
    "PRESENCE_TTL", "HEARTBEAT_INTERVAL", "IDLE_TIMEOUT", "MAX_MESSAGE_SIZE",
    "MAX_QUEUE_BYTES", "MAX_QUEUE_MESSAGES", "LOG_LEVEL", "PERMESSAGE_DEFLATE",
    "REDIS_OUTBOX_SIZE", "ADMIN_HOST", "ADMIN_PORT", "DRAIN_TIMEOUT",
)


def skip(why):
    """Exit 77 (automake: skipped) with a reason."""
    print("SKIP: " + why, flush=True)
    sys.exit(77)


# --------------------------------------------------------------------------
# Process bookkeeping: every child we start is listed here until reaped.

_children = []          # live subprocess.Popen objects (own process groups)
_servers = []           # every Server ever started in this file, for log tails
_tmpdir = tempfile.mkdtemp(prefix="rtws-e2e-")


def _kill_group(proc, grace=3.0):
    """SIGTERM the process group, SIGKILL it after grace seconds. Idempotent."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    # Anything left in the group (the daemon, or a child it forked) dies now.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    if proc in _children:
        _children.remove(proc)


def _kill_all():
    for proc in list(_children):
        _kill_group(proc, grace=1.0)


def _cleanup_files():
    try:
        for name in os.listdir(_tmpdir):
            os.unlink(os.path.join(_tmpdir, name))
        os.rmdir(_tmpdir)
    except OSError:
        pass


def _at_exit():
    _kill_all()
    _cleanup_files()


atexit.register(_at_exit)


def _on_fatal_signal(signum, frame):
    name = signal.Signals(signum).name
    if signum == signal.SIGALRM:
        print("FAIL: watchdog fired: this test file ran past its time limit "
              "(a wait without a deadline, or a hung server)", flush=True)
    else:
        print(f"FAIL: interrupted by {name}", flush=True)
    for srv in _servers:
        srv.print_log_tail()
    _kill_all()
    _cleanup_files()
    os._exit(1)


for _sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
    signal.signal(_sig, _on_fatal_signal)


# PR_SET_PDEATHSIG: a child we start gets SIGKILL when this process dies, even
# by SIGKILL (when no atexit or signal handler can run). The kernel ties it to
# the thread that forked, so children are only ever started from the main
# thread. prctl is looked up here, in the parent: the child between fork and
# exec only makes the call.
_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None
_parent_pid = os.getpid()


def _die_with_parent():
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != _parent_pid:      # the parent died before prctl took hold
        os._exit(1)


_port_random = random.Random(os.urandom(16))
_ports_handed_out = set()


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago, chosen below the
    kernel's ephemeral range (32768+): servers are restarted on their port,
    and a port from bind(0) could meanwhile be handed to any other test's
    bind(0) or outgoing connection."""
    for _ in range(200):
        port = _port_random.randrange(20000, 32768)
        # Never the same port twice in one test process: two servers started
        # together (a cluster, a public and an admin port) would race for it.
        if port in _ports_handed_out:
            continue
        _ports_handed_out.add(port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(overrides):
    env = {k: v for k, v in os.environ.items() if k not in _CONFIG_VARS}
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def _need_binary(path, what):
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        skip(f"{what} not found at {path} (set {what.upper().replace('-', '_')} "
             f"or build it with make)")


class Server:
    """A running rtwsd on a free port of 127.0.0.1.

    env: variables on top of the test defaults (HOST=127.0.0.1, PORT=<free>,
    JWT_SECRET=test-secret, LOG_LEVEL=debug, ADMIN_HOST=127.0.0.1,
    ADMIN_PORT=<free>, DRAIN_TIMEOUT=0); a value of None unsets it.
    srv.port and srv.admin_port are the ports in use (admin_port 0 when the
    test turned the admin listener off). Every server gets its own admin
    port, so servers in parallel do not fight over the default 9100, and
    DRAIN_TIMEOUT=0 keeps the at-once shutdown that ending a `with` block
    relies on; tests of the drain pass their own DRAIN_TIMEOUT.
    Use as a context manager; the process group is always killed on exit.
    """

    def __init__(self, env=None, args=(), ready_timeout=10.0):
        _need_binary(RTWSD, "rtwsd")
        self.overrides = dict(env or {})
        self.args = list(args)
        self.ready_timeout = ready_timeout
        self.proc = None
        self.port = None
        self.admin_port = None
        self.log_path = None
        self.label = ""

    # -- life cycle --------------------------------------------------------

    def start(self):
        last_tail = ""
        for attempt in range(3):
            self.port = int(self.overrides.get("PORT") or free_port())
            if "ADMIN_PORT" in self.overrides:     # None: rtwsd's own default
                admin = self.overrides["ADMIN_PORT"]
                self.admin_port = 9100 if admin is None else int(admin)
            else:
                self.admin_port = free_port()
            defaults = {"HOST": "127.0.0.1", "PORT": str(self.port),
                        "JWT_SECRET": SECRET, "LOG_LEVEL": "debug",
                        "ADMIN_HOST": "127.0.0.1", "ADMIN_PORT": str(self.admin_port),
                        "DRAIN_TIMEOUT": "0"}
            defaults.update({k: v for k, v in self.overrides.items() if k != "PORT"})
            self.env = _server_env(defaults)
            fd, self.log_path = tempfile.mkstemp(prefix="rtwsd-", suffix=".log", dir=_tmpdir)
            self.log_file = os.fdopen(fd, "wb")
            self.proc = subprocess.Popen([RTWSD] + self.args, env=self.env,
                                         stdin=subprocess.DEVNULL,
                                         stdout=self.log_file, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         preexec_fn=_die_with_parent)
            _children.append(self.proc)
            _servers.append(self)
            self.label = f"rtwsd pid {self.proc.pid} port {self.port}"
            state = self._wait_listening()
            if state == "ready":
                return self
            last_tail = self.log_tail()
            self.stop()
            # A port race with another process is the only reason to retry.
            if state == "exited" and re.search(r"in use|bind|cannot listen", last_tail, re.I) \
                    and "PORT" not in self.overrides and "ADMIN_PORT" not in self.overrides:
                continue
            break
        raise Failure(f"rtwsd did not start listening on 127.0.0.1:{self.port} "
                      f"within {self.ready_timeout:.0f} s (start-up must succeed "
                      f"with a valid configuration); log tail:\n{last_tail}")

    def _wait_listening(self):
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return "ready"
            except OSError:
                time.sleep(0.02)   # polling with a deadline, not settling
        return "timeout"

    def stop(self, grace=3.0):
        if self.proc is not None:
            _kill_group(self.proc, grace=grace)
        if getattr(self, "log_file", None):
            self.log_file.close()
            self.log_file = None
            # A sanitizer build reports and may go on (UBSan): its report
            # in the log fails the case that ran this server.
            found = re.search(r"runtime error:.*|ERROR: (Address|Leak)Sanitizer.*", self.log_text())
            check(found is None, f"{self.label} ran without a sanitizer report",
                  found.group(0)[:300] if found else "")

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        # main() prints the log tail of every server of a failed case.
        self.stop()
        return False

    # -- signals ------------------------------------------------------------

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        """Signal the daemon itself (not its group)."""
        os.kill(self.proc.pid, sig)

    def kill(self):
        """SIGKILL the daemon's process group now: a crash, not a shutdown
        (no close frames, no clean-up in Redis). The log stays readable."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def wait_exit(self, timeout):
        """Blocking: the exit status, or None when still running at the deadline."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    async def wait_exit_async(self, timeout):
        """Like wait_exit, but lets the event loop (our clients) run meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                return rc
            await asyncio.sleep(0.02)   # polling with a deadline
        return self.proc.poll()

    # -- log ------------------------------------------------------------------

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def log_tail(self, lines=40):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def print_log_tail(self, lines=40):
        tail = self.log_tail(lines)
        print(f"----- log tail of {self.label} -----\n{tail}\n-----", flush=True)

    async def wait_log(self, pattern, timeout=5.0):
        """Wait until a log line matches pattern (regex, case-insensitive)."""
        rx = re.compile(pattern, re.I)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_text().splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.05)   # polling a file with a deadline


class Cluster:
    """n rtwsd nodes sharing one Redis (REDIS_URL=redis_url), each on its own
    free port. `with Cluster(redis.url, 3) as (a, b, c):` - every node is
    killed when the block ends, whatever happens inside it."""

    def __init__(self, redis_url, n, env=None):
        self.redis_url = redis_url
        self.n = n
        self.env = dict(env or {})
        self.nodes = []

    def __enter__(self):
        try:
            for i in range(self.n):
                env = dict(self.env)
                env["REDIS_URL"] = self.redis_url
                srv = Server(env)
                self.nodes.append(srv)
                srv.start()
                srv.label += f" (node {'ABCDEFGHIJ'[i] if i < 10 else i})"
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return list(self.nodes)

    def __exit__(self, exc_type, exc, tb):
        for srv in self.nodes:
            srv.stop()
        return False


class RedisServer:
    """A real redis-server on a free port of 127.0.0.1, without persistence.

    Runs in its own process group, dies with this process (PR_SET_PDEATHSIG)
    and is killed when its `with` block ends, at exit and on SIGTERM/SIGHUP/
    watchdog, like Server. The port is chosen once: stop() then start()
    restarts Redis on the SAME port (a Redis restart as the nodes see it), and
    a RedisServer may be created without starting it (start=False) to give a
    node a REDIS_URL that nothing answers yet.

        with RedisServer() as redis:
            r = redis.client()
            with Cluster(redis.url, 2) as (a, b):
                ...
                redis.stop(); ...; redis.start()
                redis.pause(); ...; redis.resume()
    """

    def __init__(self, port=None, start=True, ready_timeout=10.0, args=()):
        _need_binary(REDIS_SERVER, "redis-server")
        self.fixed_port = port is not None
        self.port = int(port) if port else free_port()
        self.autostart = start
        self.ready_timeout = ready_timeout
        self.args = list(args)
        self.proc = None
        self.paused = False
        self.log_file = None
        self.log_path = None
        self.label = f"redis-server (not started) port {self.port}"

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    # -- life cycle --------------------------------------------------------

    def start(self):
        """Start (or restart) redis-server; returns when it answers PING."""
        require(not self.alive(), "RedisServer.start: redis-server is already running")
        last_tail = ""
        for attempt in range(3):
            if self.log_file is None:
                fd, self.log_path = tempfile.mkstemp(prefix="redis-", suffix=".log",
                                                     dir=_tmpdir)
                self.log_file = os.fdopen(fd, "ab")
            argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--protected-mode", "no"] + self.args
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=self.log_file, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         preexec_fn=_die_with_parent)
            self.paused = False
            _children.append(self.proc)
            if self not in _servers:
                _servers.append(self)
            self.label = f"redis-server pid {self.proc.pid} port {self.port}"
            state = self._wait_ping()
            if state == "ready":
                return self
            last_tail = self.log_tail()
            _kill_group(self.proc, grace=1.0)
            # Only a port race on a port we chose ourselves is worth a retry;
            # a restart must keep its port.
            if state == "exited" and re.search(r"in use", last_tail, re.I) \
                    and not self.fixed_port and not getattr(self, "_started_once", False):
                self.port = free_port()
                continue
            break
        raise Failure(f"redis-server did not answer PING on 127.0.0.1:{self.port} "
                      f"within {self.ready_timeout:.0f} s; log tail:\n{last_tail}")

    def _wait_ping(self):
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.settimeout(0.5)
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        self._started_once = True
                        return "ready"
            except OSError:
                pass
            time.sleep(0.02)   # polling with a deadline, not settling
        return "timeout"

    def stop(self, grace=3.0):
        """Stop redis-server (SIGTERM, then SIGKILL); the port stays ours."""
        if self.proc is not None:
            if self.paused and self.proc.poll() is None:
                self.resume()       # a stopped process cannot act on SIGTERM
            _kill_group(self.proc, grace=grace)
        self.paused = False

    def kill(self):
        """SIGKILL redis-server (a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait(timeout=5)
        self.paused = False

    def pause(self):
        """SIGSTOP: Redis keeps its sockets open but answers nothing."""
        os.killpg(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        """SIGCONT after pause()."""
        os.killpg(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        if self.autostart:
            self.start()
        elif self not in _servers:
            _servers.append(self)
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None
        return False

    def client(self, **kw):
        """A redis-py client (python3-redis) talking to this server, str replies."""
        try:
            import redis
        except ImportError:
            skip("python3-redis is not installed (apt-get install python3-redis)")
        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", 5)
        kw.setdefault("socket_connect_timeout", 2)
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)

    # -- log ------------------------------------------------------------------

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def log_tail(self, lines=20):
        return "\n".join(self.log_text().splitlines()[-lines:])

    def print_log_tail(self, lines=20):
        print(f"----- log tail of {self.label} -----\n{self.log_tail(lines)}\n-----",
              flush=True)


async def poll_until(fn, timeout, interval=0.02):
    """Calls fn() until it returns something true or timeout seconds pass;
    fn may be a coroutine function (its result is awaited, never taken as
    true itself). Returns (ok, last value). The way to wait for a state with
    a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return True, value
        if time.monotonic() >= deadline:
            return False, value
        await asyncio.sleep(interval)   # polling with a deadline


def numsub(r, room):
    """PUBSUB NUMSUB room:{room}: how many Redis connections (one per node
    with local members, docs/PROTOCOL.md section 4) subscribe to the room."""
    return dict(r.pubsub_numsub(f"room:{room}")).get(f"room:{room}", 0)


async def wait_numsub(r, room, n, timeout=5.0):
    """Waits until exactly n nodes subscribe to room; (ok, last count)."""
    last = [None]

    def probe():
        last[0] = numsub(r, room)
        return last[0] == n
    ok, _ = await poll_until(probe, timeout)
    return ok, last[0]


def presence_key(user, room):
    """The seed-compatible presence key (docs/PROTOCOL.md section 4)."""
    return f"rt:presence:user:{user}:{room}"


async def recv_until(ws, done, timeout, what):
    """Receives frames (heartbeats skipped) until done(frames) is true.
    Returns the frames; raises Failure naming `what` at the deadline."""
    frames = []
    deadline = time.monotonic() + timeout
    while not done(frames):
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure(f"{what}: gave up after {timeout} s with {len(frames)} "
                          f"frames, last {frames[-3:]!r}")
        try:
            frames.append(await recv_json(ws, left, what))
        except Failure as e:
            if "nothing received" not in str(e):
                raise
            raise Failure(f"{what}: gave up after {timeout} s with {len(frames)} "
                          f"frames, last {frames[-3:]!r}")
    return frames


def run_once(env, args=(), timeout=5.0, binary=None):
    """Run a program that is expected to exit by itself (config errors, CLI).

    Returns (exit status or None if it had to be killed, stdout, stderr).
    """
    binary = binary or RTWSD
    _need_binary(binary, os.path.basename(binary))
    proc = subprocess.Popen([binary] + list(args), env=_server_env(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    _children.append(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc, grace=1.0)
        out, err = proc.communicate()
        rc = None
    finally:
        _kill_group(proc, grace=1.0)
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# --------------------------------------------------------------------------
# JWT, built independently of the server with hmac + base64url.

_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_UNSET = object()


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    text += "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(text.encode("ascii"))


def _compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def _sign(signing_input, secret, alg):
    key = secret.encode() if isinstance(secret, str) else secret
    return b64url(hmac.new(key, signing_input.encode("ascii"), _DIGESTS[alg]).digest())


def mint(sub="alice", secret=SECRET, alg="HS256", exp_in=3600, header=None, **claims):
    """An HS256/384/512 JWT. sub=None leaves `sub` out; exp_in=None leaves `exp`
    out; exp_in is relative to now (negative = already expired). Extra claims
    are added as given (nbf=..., aud=..., iss=..., user_id=...)."""
    hdr = {"alg": alg, "typ": "JWT"}
    hdr.update(header or {})
    payload = {}
    if sub is not None:
        payload["sub"] = sub
    now = int(time.time())
    payload["iat"] = now
    if exp_in is not None:
        payload["exp"] = now + exp_in
    payload.update(claims)
    signing_input = b64url(_compact(hdr)) + "." + b64url(_compact(payload))
    return signing_input + "." + _sign(signing_input, secret, alg)


def mint_none(sub="alice", exp_in=3600, **claims):
    """An unsigned token with header alg "none" (must always be refused)."""
    now = int(time.time())
    payload = {"sub": sub, "iat": now, "exp": now + exp_in}
    payload.update(claims)
    return b64url(_compact({"alg": "none", "typ": "JWT"})) + "." + \
        b64url(_compact(payload)) + "."


def tamper_payload(token, **changes):
    """Keeps header and signature, rewrites claims (e.g. sub='mallory')."""
    h, p, s = token.split(".")
    payload = json.loads(b64url_decode(p))
    payload.update(changes)
    return h + "." + b64url(_compact(payload)) + "." + s


def tamper_signature(token):
    """Flips bits in the signature's first byte."""
    h, p, s = token.split(".")
    raw = bytearray(b64url_decode(s))
    raw[0] ^= 0x5A
    return h + "." + p + "." + b64url(bytes(raw))


def decode_jwt(token):
    """(header, payload, signing_input, signature bytes) without verifying."""
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), h + "." + p, \
        b64url_decode(s)


# --------------------------------------------------------------------------
# WebSocket client helpers (python3-websockets).

_DEFAULT = object()


async def connect(port, room, token=_DEFAULT, via="query", origin=None,
                  extra_headers=None, open_timeout=5, **kw):
    """Open ws://127.0.0.1:port/ws/room with the token placed by `via`:
    "query" (?token=), "cookie" (access_token=) or "header" (Bearer).
    token=None sends none; the default is a valid token for user alice."""
    if token is _DEFAULT:
        token = mint("alice")
    path = f"/ws/{room}"
    headers = list(extra_headers or [])
    if token is not None:
        if via == "query":
            path += "?token=" + token
        elif via == "cookie":
            headers.append(("Cookie", "access_token=" + token))
        elif via == "header":
            headers.append(("Authorization", "Bearer " + token))
        else:
            raise ValueError(via)
    kw.setdefault("max_size", None)
    kw.setdefault("ping_interval", None)   # our own pings would muddy idle tests
    return await websockets.connect(f"ws://127.0.0.1:{port}{path}", origin=origin,
                                    extra_headers=headers, open_timeout=open_timeout,
                                    **kw)


async def recv_frame_json(ws, timeout=2.0, what="a frame"):
    """The next frame as parsed JSON; a Failure naming `what` if none comes."""
    try:
        raw = await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        raise Failure(f"{what}: nothing received within {timeout} s")
    except websockets.exceptions.ConnectionClosed as e:
        raise Failure(f"{what}: connection closed instead (code {e.code} "
                      f"reason {e.reason!r})")
    if not isinstance(raw, str):
        raise Failure(f"{what}: got a binary frame {raw[:60]!r}; every server "
                      f"frame must be a JSON text frame")
    try:
        return json.loads(raw)
    except ValueError:
        raise Failure(f"{what}: server frame is not JSON: {raw[:200]!r}")


async def recv_json(ws, timeout=2.0, what="a frame", skip_pings=True):
    """Like recv_frame_json, but skips server heartbeats (system.ping)."""
    deadline = time.monotonic() + timeout
    while True:
        left = max(0.01, deadline - time.monotonic())
        msg = await recv_frame_json(ws, left, what)
        if skip_pings and isinstance(msg, dict) and msg.get("type") == "system.ping":
            continue
        return msg


async def expect_close(ws, timeout=3.0):
    """Drain frames until the server closes. Returns (code, reason, frames).
    code is None when nothing closed within timeout; 1006 when the TCP
    connection ended without a close frame."""
    frames = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, None, frames
            frames.append(await asyncio.wait_for(ws.recv(), left))
    except asyncio.TimeoutError:
        return None, None, frames
    except websockets.exceptions.ConnectionClosed as e:
        return e.code, e.reason, frames


async def ping_ack(ws, ref, timeout=2.0, what="connection still serves"):
    """Send system.ping with id=ref; the next non-heartbeat frame must be its ack."""
    try:
        await ws.send(json.dumps({"type": "system.ping", "id": ref}))
    except websockets.exceptions.ConnectionClosed as e:
        raise Failure(f"{what}: connection was closed (code {e.code} reason "
                      f"{e.reason!r}) before system.ping could be sent")
    msg = await recv_json(ws, timeout, what)
    return msg == {"type": "system.ack", "id": None, "version": 1, "ref": ref}, msg


async def expect_silence_then(ws, ref, what, timeout=2.0):
    """Prove that nothing was queued for ws: a ping sent now is answered by the
    very next frame. Records a failure naming `what` otherwise."""
    ok, msg = await ping_ack(ws, ref, timeout, what)
    check(ok, what, f"next frame was {msg!r}, expected the ack of ping {ref!r}")
    return ok


async def expect_rejected(port, room, status, what, **kw):
    """The websockets client must see HTTP `status` (InvalidStatusCode)."""
    try:
        ws = await connect(port, room, **kw)
    except websockets.exceptions.InvalidStatusCode as e:
        return check_eq(e.status_code, status, what)
    except Exception as e:   # empty reply, reset, bad status line...
        return check(False, what, f"expected HTTP {status}, client saw "
                                  f"{type(e).__name__}: {e}")
    await ws.close()
    return check(False, what, f"expected HTTP {status}, but the upgrade succeeded")


async def expect_accepted(port, room, what, **kw):
    """The upgrade succeeds and the connection answers a ping."""
    try:
        ws = await connect(port, room, **kw)
    except websockets.exceptions.InvalidStatusCode as e:
        return check(False, what, f"rejected with HTTP {e.status_code}")
    except Exception as e:
        return check(False, what, f"{type(e).__name__}: {e}")
    try:
        ok, msg = await ping_ack(ws, "accepted-probe", 2.0, what)
        return check(ok, what, f"answer to ping was {msg!r}")
    finally:
        await ws.close()


# --------------------------------------------------------------------------
# Raw HTTP / WebSocket over asyncio streams, for exact bytes and hostile input.

def ws_mask(data, key):
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def ws_frame(opcode, payload=b"", fin=True, mask=True, rsv=0, declared_len=None, key=None):
    """One client frame. declared_len lies about the payload length when set."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if declared_len is None else declared_len
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = bytes([b0, mbit | n])
    elif n < 65536:
        hdr = bytes([b0, mbit | 126]) + n.to_bytes(2, "big")
    else:
        hdr = bytes([b0, mbit | 127]) + n.to_bytes(8, "big")
    if mask:
        key = key or os.urandom(4)
        return hdr + key + ws_mask(payload, key)
    return hdr + payload


def http_request(port, path, headers=(), method="GET"):
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ws_upgrade_request(port, path, headers=(), key=None):
    key = key or base64.b64encode(os.urandom(16)).decode()
    hdrs = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    return http_request(port, path, hdrs + list(headers)), key


async def http_get(port, path, timeout=3.0, method="GET", headers=()):
    """One plain HTTP/1.1 request to 127.0.0.1:port (Connection: close).
    Returns (status, {lower-case header: value}, body text); status is None
    when the server closed without answering. Raises Failure on timeout."""
    async def exchange():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(http_request(port, path, [("Connection", "close")] + list(headers),
                                      method))
            await writer.drain()
            return await reader.read()
        finally:
            writer.close()
    try:
        raw = await asyncio.wait_for(exchange(), timeout)
    except asyncio.TimeoutError:
        raise Failure(f"{method} {path} on port {port}: no answer within {timeout} s")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1."):
        return None, {}, body.decode("utf-8", "replace")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body.decode("utf-8", "replace")


class RawConn:
    """A TCP connection to 127.0.0.1:port driven byte by byte."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port, timeout=3.0):
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        return cls(r, w)

    async def send(self, data):
        self.writer.write(data)
        await self.writer.drain()

    def close(self, abort=False):
        try:
            if abort:
                self.writer.transport.abort()
            else:
                self.writer.close()
        except Exception:
            pass

    async def read_http_head(self, timeout=3.0):
        """(status line, {lower-case header: value}) or raises Failure.
        Returns (None, {}) if the server closed without any bytes."""
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                return None, {}
            head = e.partial
        except asyncio.TimeoutError:
            raise Failure(f"no HTTP response head within {timeout} s")
        except ConnectionError:
            return None, {}
        text = head.decode("latin-1")
        lines = text.split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return lines[0], headers

    async def upgrade(self, port, room, token=None, origin=None, headers=(), timeout=3.0):
        """Performs the WebSocket handshake by hand; raises Failure unless 101
        with a correct Sec-WebSocket-Accept."""
        path = f"/ws/{room}" + (f"?token={token}" if token else "")
        extra = list(headers) + ([("Origin", origin)] if origin else [])
        req, key = ws_upgrade_request(port, path, extra)
        await self.send(req)
        status, hdrs = await self.read_http_head(timeout)
        if not status or not status.startswith("HTTP/1.1 101"):
            raise Failure(f"raw upgrade of /ws/{room} failed: status {status!r}")
        want = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if hdrs.get("sec-websocket-accept") != want:
            raise Failure(f"raw upgrade: Sec-WebSocket-Accept {hdrs.get('sec-websocket-accept')!r}"
                          f" != {want!r} (RFC 6455 handshake)")
        return hdrs

    async def read_frame(self, timeout=3.0):
        """(fin, opcode, payload) of the next server frame; None on EOF/reset."""
        try:
            return await asyncio.wait_for(self._read_frame(), timeout)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def _read_frame(self):
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        key = await self.reader.readexactly(4) if b1 & 0x80 else None
        payload = await self.reader.readexactly(n)
        if key:
            payload = ws_mask(payload, key)
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def read_close(self, timeout=3.0):
        """Reads frames until a close frame: (code, reason, other frames).
        code is 1006 on EOF without a close frame, None on timeout."""
        deadline = time.monotonic() + timeout
        others = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, None, others
            try:
                fr = await self.read_frame(left)
            except asyncio.TimeoutError:
                return None, None, others
            if fr is None:
                return 1006, "", others
            fin, op, payload = fr
            if op == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                return code, payload[2:].decode("utf-8", "replace"), others
            others.append(fr)

    async def read_until_eof(self, timeout=3.0):
        """True when the server ends the connection within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except asyncio.TimeoutError:
                return False
            except ConnectionError:
                return True
            if not data:
                return True


# --------------------------------------------------------------------------
# A tiny runner: check() records, main() runs cases with deadlines.

class Failure(Exception):
    """A test expectation that cannot be met; ends the current case."""


_failures = []


def check(cond, what, detail=""):
    """Records a failure naming the protected behaviour unless cond holds."""
    if not cond:
        msg = f"{what}" + (f": {detail}" if detail else "")
        _failures.append(msg)
        print(f"    not ok - {msg}", flush=True)
    return bool(cond)


def check_eq(actual, expected, what):
    return check(actual == expected, what, f"got {actual!r}, expected {expected!r}")


def require(cond, what, detail=""):
    """Like check, but a failure ends the case (later steps depend on it)."""
    if not cond:
        raise Failure(f"{what}" + (f": {detail}" if detail else ""))


def main(tests, per_test_timeout=60, watchdog=110):
    """Runs each async test with a deadline; prints PASS/FAIL; exits 0 or 1."""
    signal.alarm(watchdog)
    failed = []

    async def run_all():
        for test in tests:
            name = test.__name__
            del _failures[:]
            first_server = len(_servers)
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(test(), per_test_timeout)
            except asyncio.TimeoutError:
                _failures.append(f"case did not finish within {per_test_timeout} s "
                                 f"(a reply or close never came)")
                print(f"    not ok - {_failures[-1]}", flush=True)
            except Failure as e:
                _failures.append(str(e))
                print(f"    not ok - {e}", flush=True)
            except Exception:
                _failures.append("unexpected exception:\n" + traceback.format_exc())
                print(f"    not ok - {_failures[-1]}", flush=True)
            dt = time.monotonic() - t0
            if _failures:
                failed.append(name)
                print(f"FAIL {name} ({dt:.1f} s)", flush=True)
                for srv in _servers[first_server:]:
                    srv.print_log_tail()
            else:
                print(f"PASS {name} ({dt:.1f} s)", flush=True)
            for srv in _servers[first_server:]:
                srv.stop(grace=1.0)

    try:
        asyncio.run(run_all())
    finally:
        signal.alarm(0)
        _kill_all()
    print(f"{len(tests) - len(failed)}/{len(tests)} cases passed"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    sys.exit(1 if failed else 0)
