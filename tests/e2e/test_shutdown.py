"""Graceful shutdown: on SIGTERM or SIGINT every connection is closed with 1001
before rtwsd exits with status 0 (docs/PROTOCOL.md section 3)."""

import asyncio
import signal
import socket

from rtws_harness import *


async def _shutdown_with(sig):
    name = signal.Signals(sig).name
    with Server() as srv:
        a = await connect(srv.port, "r1", token=mint("alice"))
        b = await connect(srv.port, "r2", token=mint("bob"))
        # Both connections are fully established and served before the signal.
        for ws, who in ((a, "alice"), (b, "bob")):
            ok, msg = await ping_ack(ws, f"pre-{who}", what="connection before shutdown")
            require(ok, "connections are served before shutdown", repr(msg))
        srv.send_signal(sig)
        (ca, ra, _), (cb, rb, _), rc = await asyncio.gather(
            expect_close(a, 5.0), expect_close(b, 5.0), srv.wait_exit_async(8.0))
        check_eq(ca, 1001, f"on {name} the first client sees close code 1001 (going away)")
        check_eq(cb, 1001, f"on {name} the second client (other room) sees close code 1001")
        check(rc is not None, f"rtwsd exits within a few seconds of {name}",
              "still running after 8 s")
        check_eq(rc, 0, f"rtwsd exits with status 0 after {name}")
        if rc is not None:
            with socket.socket() as s:
                s.settimeout(1)
                refused = s.connect_ex(("127.0.0.1", srv.port)) != 0
            check(refused, f"nothing listens on the port after {name}")


async def test_sigterm():
    await _shutdown_with(signal.SIGTERM)


async def test_sigint():
    await _shutdown_with(signal.SIGINT)


async def test_sigterm_with_no_clients():
    with Server() as srv:
        srv.send_signal(signal.SIGTERM)
        rc = await srv.wait_exit_async(5.0)
        check_eq(rc, 0, "an idle rtwsd exits 0 promptly on SIGTERM")


if __name__ == "__main__":
    main([test_sigterm, test_sigint, test_sigterm_with_no_clients],
         per_test_timeout=25, watchdog=55)
