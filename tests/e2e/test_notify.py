"""systemd readiness (Type=notify): rtwsd sends READY=1 on $NOTIFY_SOCKET once
it listens, and STOPPING=1 when a signal starts its shutdown; without
$NOTIFY_SOCKET it runs as usual."""

import asyncio
import os
import signal
import socket
import tempfile

from rtws_harness import *


def _recv(sock, timeout):
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode()
    except socket.timeout:
        return None


async def test_ready_and_stopping():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        try:
            with Server({"NOTIFY_SOCKET": path}) as srv:
                ready = await asyncio.to_thread(_recv, sock, 5.0)
                check(ready is not None and "READY=1" in ready.splitlines(),
                      "rtwsd tells systemd READY=1 once it listens", repr(ready))
                # READY comes after the port is open: a client is served now.
                ws = await connect(srv.port, "r1", token=mint("alice"))
                ok, msg = await ping_ack(ws, "after-ready", what="connection after READY=1")
                check(ok, "a client is served once READY=1 was sent", repr(msg))
                srv.send_signal(signal.SIGTERM)
                stopping = await asyncio.to_thread(_recv, sock, 5.0)
                check(stopping is not None and "STOPPING=1" in stopping.splitlines(),
                      "rtwsd tells systemd STOPPING=1 when shutdown starts", repr(stopping))
                rc = await srv.wait_exit_async(8.0)
                check_eq(rc, 0, "rtwsd exits 0 after SIGTERM under systemd")
        finally:
            sock.close()


async def test_abstract_socket():
    name = f"@rtws-notify-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    try:
        with Server({"NOTIFY_SOCKET": name}):
            ready = await asyncio.to_thread(_recv, sock, 5.0)
            check(ready is not None and "READY=1" in ready.splitlines(),
                  "an abstract $NOTIFY_SOCKET (leading @) receives READY=1", repr(ready))
    finally:
        sock.close()


if __name__ == "__main__":
    main([test_ready_and_stopping, test_abstract_socket], per_test_timeout=25, watchdog=55)
