"""Limits and token lifetime (docs/PROTOCOL.md section 5): rate limit, connection
caps, slowloris, long URIs, slow consumers, token expiry and auth.refresh. Each
bound is hit on purpose; the server must answer as the contract says, stay up,
and leave the other clients alone."""

import asyncio
import json
import os
import re
import socket
import time

import websockets.exceptions

from rtws_harness import *


async def test_rate_limited_then_closed():
    env = {"RATE_LIMIT": "5", "RATE_BURST": "10"}
    with Server(env) as srv:
        ws = await connect(srv.port, "r1", token=mint("spammer"))
        calm = await connect(srv.port, "r1", token=mint("calm"))
        # A full bucket lets RATE_BURST frames through at once.
        for i in range(10):
            await ws.send(json.dumps({"type": "system.ping", "id": f"ok-{i}"}))
        for i in range(10):
            msg = await recv_json(ws, 2.0, f"ack {i} within the burst")
            check_eq(msg.get("ref"), f"ok-{i}", f"frame {i} within RATE_BURST is served")
        # The next one is over the limit: dropped, answered rate_limited with its id.
        await ws.send(json.dumps({"type": "chat.message", "text": "x", "id": "over-1"}))
        msg = await recv_json(ws, 2.0, "answer to a frame over the limit")
        check_eq(msg, {"type": "system.error", "error": "rate_limited", "ref": "over-1"},
                 "a frame over the rate limit is answered rate_limited with its ref")
        # The dropped chat.message was not delivered to the room.
        await expect_silence_then(calm, "calm-1",
                                  "a rate-limited chat.message is not fanned out")
        # Sustained abuse: a further burst's worth of refused frames (RATE_BURST
        # in a row, the one above included) closes with 1008. Exactly that
        # many: frames sent after the close would race the close frame.
        for i in range(9):
            try:
                await ws.send('{"type":"system.pong"}')
            except websockets.exceptions.ConnectionClosed:
                break
        code, reason, _ = await expect_close(ws, 3.0)
        check_eq((code, reason), (1008, "rate limited"),
                 "sustained abuse closes with 1008 'rate limited'")
        ok, msg = await ping_ack(calm, "calm-2", what="the calm client is unaffected")
        check(ok, "another client in the room keeps being served", repr(msg))


async def test_rate_limit_refills():
    env = {"RATE_LIMIT": "20", "RATE_BURST": "2"}
    with Server(env) as srv:
        ws = await connect(srv.port, "r1", token=mint("steady"))
        # 20/s: one frame every 100 ms never meets the limit.
        for i in range(15):
            ok, msg = await ping_ack(ws, f"s-{i}", what="a client within its rate")
            check(ok, f"frame {i} at half the rate limit is served", repr(msg))
            await asyncio.sleep(0.1)        # the pace is what is tested


async def test_max_connections():
    with Server({"MAX_CONNECTIONS": "3"}) as srv:
        held = [await connect(srv.port, "r1", token=mint(f"u{i}")) for i in range(3)]
        await expect_rejected(srv.port, "r1", 503,
                              "a handshake past MAX_CONNECTIONS is answered 503",
                              token=mint("u4"))
        for i, ws in enumerate(held):
            ok, msg = await ping_ack(ws, f"held-{i}", what="existing connections")
            check(ok, f"existing connection {i} is unaffected by the refusal", repr(msg))
        await held[0].close()
        # A freed slot is usable again (poll: the close is handled asynchronously).
        async def accepted():
            try:
                ws = await connect(srv.port, "r1", token=mint("u5"))
            except websockets.exceptions.InvalidStatusCode:
                return None
            return ws
        ok, _ = await poll_until(accepted, 3.0)
        check(ok, "a slot freed by a close is given to the next client")


async def test_max_connections_per_ip():
    with Server({"MAX_CONNECTIONS_PER_IP": "2"}) as srv:
        a = await connect(srv.port, "r1", token=mint("a"))
        b = await connect(srv.port, "r2", token=mint("b"))
        await expect_rejected(srv.port, "r1", 429,
                              "a third connection from one address is answered 429",
                              token=mint("c"))
        ok, _ = await ping_ack(a, "a-1", what="first connection")
        check(ok, "connections from the capped address stay served")
        ok, _ = await ping_ack(b, "b-1", what="second connection")
        check(ok, "connections from the capped address stay served")


async def test_slowloris_dropped():
    with Server({"HANDSHAKE_TIMEOUT": "1"}) as srv:
        def stall(partial):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(partial)
            t0 = time.monotonic()
            try:
                data = s.recv(4096)
                while data:
                    data = s.recv(4096)
            except (ConnectionResetError, socket.timeout):
                pass
            s.close()
            return time.monotonic() - t0
        silent, partial = await asyncio.gather(
            asyncio.to_thread(stall, b""),
            asyncio.to_thread(stall, b"GET /ws/r1 HTTP/1.1\r\nHost: x\r\n"))
        check(silent < 4.0, "a TCP client that sends nothing is dropped after "
                            "HANDSHAKE_TIMEOUT", f"held for {silent:.1f} s")
        check(partial < 4.0, "a client that never finishes its headers is dropped after "
                             "HANDSHAKE_TIMEOUT", f"held for {partial:.1f} s")
        await expect_accepted(srv.port, "r1", "the server serves others after slowloris")


async def test_uri_too_long():
    with Server() as srv:
        conn = await RawConn.open(srv.port)
        request, _ = ws_upgrade_request(srv.port, "/ws/" + "a" * 400)
        await conn.send(request)
        status, _ = await conn.read_http_head()
        check(status is not None and status.startswith("HTTP/1.1 414"),
              "a request path longer than the server accepts is answered 414", repr(status))
        conn.close()
        # Headers past the server's header budget cannot be parsed at all: the
        # connection is closed without an upgrade (PROTOCOL.md section 5).
        conn = await RawConn.open(srv.port)
        request, _ = ws_upgrade_request(srv.port, "/ws/r1",
                                        headers=[("X-Pad", "p" * 30000)])
        await conn.send(request)
        status, _ = await conn.read_http_head()
        check(status is None or status.startswith("HTTP/1.1 431"),
              "oversized headers are refused (431) or the connection is closed",
              repr(status))
        conn.close()
        await expect_accepted(srv.port, "r1", "the server serves others after oversized requests")


async def test_slow_consumer_closed():
    # MAX_QUEUE_BYTES small: a client that stops reading overflows it quickly,
    # while the paced readers (at most 20 x 2 KB behind) never come near it.
    env = {"MAX_QUEUE_BYTES": "262144", "RATE_LIMIT": "0"}
    with Server(env) as srv:
        # A small receive window, set before connecting, so the kernel buffers
        # in between hold little and the server's queue is what fills.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        sock.setblocking(False)
        slow = RawConn(*await asyncio.open_connection(sock=sock))
        await slow.upgrade(srv.port, "busy", token=mint("slow"))
        fast = await connect(srv.port, "busy", token=mint("fast"))
        sender = await connect(srv.port, "busy", token=mint("sender"))
        text = "x" * 2000
        n = 5000                        # 10 MB through a room where one never reads
        received = 0

        async def read_fast():
            nonlocal received
            while received < n:
                msg = await recv_json(fast, 10.0, "fast reader's deliveries")
                if msg.get("type") == "chat.delivery":
                    received += 1

        async def drain_sender():
            # The sender is in the room too: it must read its own deliveries
            # or it becomes a slow consumer itself.
            try:
                while True:
                    await sender.recv()
            except websockets.exceptions.ConnectionClosed:
                pass

        async def cut():
            _, _, text = await http_get(srv.admin_port, "/metrics")
            m = re.search(r'^rtws_drops_total\{reason="slow_consumer"\} (\d+)', text, re.M)
            return m is not None and int(m.group(1)) > 0

        async def slow_once_cut_off():
            # The contract gives a cut-off client 2 s to take its close
            # frame: it starts reading as soon as /metrics counts the cut.
            await poll_until(cut, 30.0, interval=0.05)
            return await slow.read_close(20.0)

        drainer = asyncio.create_task(drain_sender())
        reader = asyncio.create_task(read_fast())
        slow_reader = asyncio.create_task(slow_once_cut_off())
        # The room is busy but paced so that a reading client keeps up: at
        # most 20 messages ahead of the fast reader.
        for i in range(n):
            while i - received > 20:
                await asyncio.sleep(0.001)      # pacing the sender, not settling
            await sender.send(json.dumps({"type": "chat.message", "text": text,
                                          "id": f"m{i}"}))
        await asyncio.wait_for(reader, 20.0)
        check_eq(received, n, "a reading client gets every message while another "
                              "one stalls")
        # The slow client, cut off, read what was buffered, then a 1008 close.
        code, reason, frames = await asyncio.wait_for(slow_reader, 30.0)
        check_eq((code, reason), (1008, "slow consumer"),
                 "a client over its unsent-output bound is closed 1008 'slow consumer'")
        check(len(frames) < n, "the slow client was cut off rather than sent everything",
              f"it received {len(frames)} of {n} frames")
        slow.close()
        drainer.cancel()
        ok, msg = await ping_ack(fast, "after", what="a reader after the slow consumer")
        check(ok, "the server keeps serving after closing a slow consumer", repr(msg))
        rss = int([l for l in open(f"/proc/{srv.proc.pid}/status")
                   if l.startswith("VmRSS:")][0].split()[1])
        # 10 MB went through the room; the stalled client may hold at most
        # MAX_QUEUE_BYTES of it. AddressSanitizer's shadow and quarantine
        # multiply what any allocation costs, so its bound is wider.
        asan = "libasan" in open(f"/proc/{srv.proc.pid}/maps").read()
        bound = (1024 if asan else 200) * 1024
        check(rss < bound, "server memory stays bounded with a stalled client",
              f"VmRSS {rss} kB, bound {bound} kB")


async def test_token_expiry_closes():
    with Server() as srv:
        ws = await connect(srv.port, "r1", token=mint("short", exp_in=2))
        ok, msg = await ping_ack(ws, "alive", what="connection before expiry")
        check(ok, "a connection is served before its token expires", repr(msg))
        t0 = time.monotonic()
        code, reason, _ = await expect_close(ws, 5.0)
        check_eq((code, reason), (1008, "token expired"),
                 "when exp passes the server closes with 1008 'token expired'")
        check(time.monotonic() - t0 < 4.0, "the expiry close comes within a second or so of exp")


async def test_refresh_extends():
    with Server() as srv:
        ws = await connect(srv.port, "r1", token=mint("alice", exp_in=2))
        fresh = mint("alice", exp_in=60)
        await ws.send(json.dumps({"type": "auth.refresh", "token": fresh}))
        msg = await recv_json(ws, 2.0, "answer to auth.refresh")
        exp = decode_jwt(fresh)[1]["exp"]
        check_eq(msg, {"type": "auth.ok", "exp": exp},
                 "a valid refresh for the same user is answered auth.ok with the new exp")
        await asyncio.sleep(3.0)        # past the old exp: time is the behaviour
        ok, msg = await ping_ack(ws, "after-old-exp", what="connection after refresh")
        check(ok, "a refreshed connection outlives its first token", repr(msg))
        # A token without exp: auth.ok with exp null.
        await ws.send(json.dumps({"type": "auth.refresh", "token": mint("alice", exp_in=None)}))
        msg = await recv_json(ws, 2.0, "answer to a refresh without exp")
        check_eq(msg, {"type": "auth.ok", "exp": None},
                 "a refresh with a token without exp answers exp null")


async def test_refresh_refused():
    with Server() as srv:
        ws = await connect(srv.port, "r1", token=mint("alice", exp_in=3))
        cases = [
            (mint("mallory", exp_in=60), "a token of another user"),
            (mint("alice", secret="wrong", exp_in=60), "a token with a bad signature"),
            (mint("alice", exp_in=-10), "an expired token"),
        ]
        for token, what in cases:
            await ws.send(json.dumps({"type": "auth.refresh", "token": token}))
            msg = await recv_json(ws, 2.0, f"answer to refresh with {what}")
            check_eq(msg, {"type": "system.error", "error": "bad_token"},
                     f"auth.refresh with {what} is answered bad_token")
        await ws.send(json.dumps({"type": "auth.refresh"}))
        msg = await recv_json(ws, 2.0, "answer to auth.refresh without token")
        check_eq(msg, {"type": "system.error", "error": "bad_message"},
                 "auth.refresh without a string token is bad_message")
        # The old expiry stands.
        code, reason, _ = await expect_close(ws, 5.0)
        check_eq((code, reason), (1008, "token expired"),
                 "after refused refreshes the old expiry still closes the connection")


def _open_files_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), (None if hard == "unlimited" else int(hard))
    return None, None


async def test_fd_limit_sized_to_max_connections():
    """Debian's lws scans a table as long as the open-file limit on every
    socket change: rtwsd sets its soft limit to MAX_CONNECTIONS + 1024,
    lowering or raising it (up to the hard limit), and says when the hard
    limit holds fewer connections than MAX_CONNECTIONS."""
    for cap in ("100", "3000"):
        with Server({"MAX_CONNECTIONS": cap}) as srv:
            soft, hard = _open_files_limit(srv.proc.pid)
            want = int(cap) + 1024 if hard is None else min(hard, int(cap) + 1024)
            check_eq(soft, want, f"MAX_CONNECTIONS={cap}: the soft open-file limit is "
                                 f"MAX_CONNECTIONS + 1024 (hard {hard})")
            ws = await connect(srv.port, "r1")
            ok, msg = await ping_ack(ws, "fd-1")
            check(ok, "the sized server serves", repr(msg))
            await ws.close()
    with Server({"MAX_CONNECTIONS": "10000000"}) as srv:
        soft, hard = _open_files_limit(srv.proc.pid)
        if hard is not None:
            check_eq(soft, hard, "a MAX_CONNECTIONS past the hard limit raises the soft limit to it")
            check(re.search(r"open-file limit .* holds about \d+ connections", srv.log_text()),
                  "the log says how many connections the limit holds", srv.log_tail(10))


async def test_out_of_file_descriptors():
    """When the process runs out of file descriptors, a new connection is
    taken and closed at once (not left to spin the accept loop), the open
    ones are unaffected, and new ones are served again once fds are free."""
    import resource
    with Server({"MAX_CONNECTIONS": "5000", "GATEWAY_THREADS": "1"}) as srv:
        held = [await connect(srv.port, "fd", token=mint(f"h{i}")) for i in range(20)]
        used = len(os.listdir(f"/proc/{srv.proc.pid}/fd"))
        resource.prlimit(srv.proc.pid, resource.RLIMIT_NOFILE, (used + 5, used + 5))
        more, refused = [], 0
        for i in range(30):
            try:
                more.append(await connect(srv.port, "fd", token=mint(f"m{i}"), open_timeout=2))
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException):
                refused += 1
        check(refused > 0, "connections past the fd limit are refused", f"{len(more)} opened")
        check(re.search(r"out of file descriptors", srv.log_text()) is not None,
              "the log says the fds ran out", srv.log_tail(5))
        for i, ws in enumerate(held[:5]):
            ok, msg = await ping_ack(ws, f"held-{i}", what="an open connection")
            check(ok, f"open connection {i} is served while fds are short", repr(msg))
        for ws in held[5:] + more:
            await ws.close()

        async def accepted():
            try:
                return await connect(srv.port, "fd", token=mint("again"), open_timeout=2)
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException):
                return None
        ok, _ = await poll_until(accepted, 5.0)
        check(ok, "new connections are served again once fds are free")
        check(srv.alive(), "rtwsd stays up")


async def test_far_future_exp():
    """A token whose exp is far in the future (up to 2^62 s) is served like
    any other: the expiry timer is kept within a day, no overflow."""
    with Server() as srv:
        ws = await connect(srv.port, "far", token=mint("far", exp_in=2 ** 62))
        ok, msg = await ping_ack(ws, "far-1")
        check(ok, "a connection with a far-future exp is served", repr(msg))
        ok, msg = await ping_ack(ws, "far-2")
        check(ok, "and stays served", repr(msg))
        await ws.close()


if __name__ == "__main__":
    main([test_rate_limited_then_closed, test_rate_limit_refills, test_max_connections,
          test_max_connections_per_ip, test_slowloris_dropped, test_uri_too_long,
          test_slow_consumer_closed, test_token_expiry_closes, test_refresh_extends,
          test_refresh_refused, test_fd_limit_sized_to_max_connections,
          test_out_of_file_descriptors, test_far_future_exp],
         per_test_timeout=40, watchdog=170)
