"""GATEWAY_THREADS: several lws service threads share the WebSocket port
(one listening socket each, SO_REUSEPORT). Connections land on every
thread, a room spans them, the caps and /metrics count across them, and a
port another process holds is refused rather than shared."""

import asyncio
import json
import os
import re
import signal
import socket

from rtws_harness import *

N = 24


def shards_of(srv):
    """Thread index of every connection opened so far (the id's low 6 bits)."""
    return [int(n) % 64 for n in re.findall(r"open conn=(\d+)", srv.log_text())]


async def test_room_spans_threads():
    with Server({"GATEWAY_THREADS": "2"}) as srv:
        check("with 2 service threads" in srv.log_text(),
              "the start-up log names the number of service threads", srv.log_tail(5))
        clients = [await connect(srv.port, "lobby", token=mint(f"u{i}")) for i in range(N)]
        shards = shards_of(srv)
        check(len(shards) == N and set(shards) == {0, 1},
              "connections are spread over both service threads", repr(shards))
        await clients[0].send(json.dumps({"type": "chat.message", "text": "to all"}))
        for i, ws in enumerate(clients):
            msg = await recv_json(ws, 3, f"the delivery to client {i}")
            check_eq((msg.get("type"), msg.get("text")), ("chat.delivery", "to all"),
                     f"client {i} gets the room's message whatever its thread")
        # Exactly once: nothing more follows a second message's delivery.
        await clients[1].send(json.dumps({"type": "chat.message", "text": "second"}))
        for i, ws in enumerate(clients):
            msg = await recv_json(ws, 3, f"the second delivery to client {i}")
            check_eq(msg.get("text"), "second", f"client {i} got the first message once")
        status, _, text = await http_get(srv.admin_port, "/metrics")
        open_now = re.search(r"^rtws_connections (\d+)", text, re.M)
        check(open_now and int(open_now.group(1)) == N,
              "/metrics counts the open connections of every thread",
              open_now.group(0) if open_now else text[:300])
        delivered = re.search(r"^rtws_deliveries_total (\d+)", text, re.M)
        check(delivered and int(delivered.group(1)) >= 2 * N,
              "/metrics sums the deliveries of every thread",
              delivered.group(0) if delivered else text[:300])
        for ws in clients:
            await ws.close()


async def test_caps_span_threads():
    cap = 10
    with Server({"GATEWAY_THREADS": "2", "MAX_CONNECTIONS": str(cap)}) as srv:
        held = [await connect(srv.port, "r1", token=mint(f"c{i}")) for i in range(cap)]
        check(set(shards_of(srv)) == {0, 1}, "the capped connections sit on both threads",
              repr(shards_of(srv)))
        for i in range(4):
            await expect_rejected(srv.port, "r1", 503,
                                  f"handshake {i + 1} past MAX_CONNECTIONS on any thread is 503",
                                  token=mint(f"over{i}"))
        status, _, body = await http_get(srv.admin_port, "/readyz")
        check_eq((status, body.strip()), (503, "full"), "/readyz says full across threads")
        for ws in held:
            await ws.close()
    with Server({"GATEWAY_THREADS": "2", "MAX_CONNECTIONS_PER_IP": "6"}) as srv:
        held = [await connect(srv.port, "r1", token=mint(f"p{i}")) for i in range(6)]
        await expect_rejected(srv.port, "r1", 429,
                              "MAX_CONNECTIONS_PER_IP counts one address over every thread",
                              token=mint("p7"))
        for ws in held:
            await ws.close()


async def test_drain_all_threads():
    with Server({"GATEWAY_THREADS": "3", "DRAIN_TIMEOUT": "1"}) as srv:
        clients = [await connect(srv.port, "r1", token=mint(f"d{i}")) for i in range(12)]
        check(len(set(shards_of(srv))) >= 2, "connections sit on several threads",
              repr(shards_of(srv)))
        srv.send_signal(signal.SIGTERM)
        for i, ws in enumerate(clients):
            code, reason, _ = await expect_close(ws, 5)
            check_eq((code, reason), (1001, "going away"),
                     f"client {i} is closed 1001 by the drain, whatever its thread")
        rc = await asyncio.get_running_loop().run_in_executor(None, srv.proc.wait, 10)
        check_eq(rc, 0, "rtwsd exits 0 once every thread has drained")
        check(re.search(r"drained 12 connections", srv.log_text()) is not None,
              "the drain counts the connections of every thread", srv.log_tail(8))


async def test_port_held_elsewhere_refused():
    # A socket in a SO_REUSEPORT group of our own user would let a careless
    # bind share the port: rtwsd must refuse it instead.
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(8)
    port = holder.getsockname()[1]
    try:
        rc, out, err = run_once({"HOST": "127.0.0.1", "PORT": str(port), "GATEWAY_THREADS": "2",
                            "ADMIN_PORT": "0", "JWT_SECRET": SECRET})
        check(rc != 0 and rc is not None, "rtwsd does not start on a port another process holds",
              f"exit status {rc}")
        check(re.search(r"cannot listen", out + err) is not None, "it says it cannot listen",
              (out + err)[-400:])
    finally:
        holder.close()


async def test_member_before_its_101():
    """A client's JOIN and another client's PUBLISH leave from different
    service threads: a message sent after a client saw its 101 must still
    reach it, every time (the JOIN is queued on the router's join socket
    before the 101, and the router reads that socket before it handles
    anything it read from its inbox)."""
    with Server({"GATEWAY_THREADS": "2", "RATE_LIMIT": "0"}) as srv:
        talker = await connect(srv.port, "order", token=mint("talker"))
        missed = []
        for i in range(300):
            newcomer = await connect(srv.port, "order", token=mint(f"n{i}"))
            await talker.send(json.dumps({"type": "chat.message", "text": f"hello-{i}"}))
            try:
                msg = await recv_json(newcomer, 3, f"newcomer {i}'s first delivery")
                if msg.get("text") != f"hello-{i}":
                    missed.append((i, msg.get("text")))
            except Failure:
                missed.append((i, None))
            await recv_json(talker, 3, f"the talker's copy {i}")
            await newcomer.close()
        shards = set(shards_of(srv))
        check(shards == {0, 1}, "newcomers landed on both threads", repr(shards))
        check(not missed, "a message sent after a newcomer's 101 always reaches it",
              f"{len(missed)} of 300 missed: {missed[:5]}")


async def test_places_given_back():
    """Every place a handshake takes under the caps is given back: clients
    that vanish (a reset) right after sending their upgrade request, or
    right after the 101, on either thread, leave the count at zero, and the
    full cap is usable again."""
    cap = 40
    with Server({"GATEWAY_THREADS": "2", "MAX_CONNECTIONS": str(cap),
                 "MAX_CONNECTIONS_PER_IP": str(cap)}) as srv:
        for i in range(120):
            conn = await RawConn.open(srv.port)
            req, _ = ws_upgrade_request(srv.port, f"/ws/gone?token={mint(f'g{i}')}", [])
            await conn.send(req)
            if i % 2:
                await conn.read_http_head(3)        # vanish after the 101
            conn.close(abort=True)                  # or before it

        async def counted_zero():
            _, _, text = await http_get(srv.admin_port, "/metrics")
            m = re.search(r"^rtws_connections (\d+)", text, re.M)
            return m and int(m.group(1)) == 0
        ok, _ = await poll_until(counted_zero, 5.0)
        check(ok, "no place is left taken by vanished clients")
        held = [await connect(srv.port, "back", token=mint(f"b{i}")) for i in range(cap)]
        check(len(held) == cap, "the whole MAX_CONNECTIONS (and per-address cap) is usable again")
        await expect_rejected(srv.port, "back", 503, "and the cap still holds",
                              token=mint("one-more"))
        for ws in held:
            await ws.close()


async def test_one_thread():
    with Server({"GATEWAY_THREADS": "1"}) as srv:
        a = await connect(srv.port, "r1", token=mint("a"))
        b = await connect(srv.port, "r1", token=mint("b"))
        check(set(shards_of(srv)) == {0}, "GATEWAY_THREADS=1 serves on one thread",
              repr(shards_of(srv)))
        await a.send(json.dumps({"type": "chat.message", "text": "hi"}))
        msg = await recv_json(b, 3, "the delivery")
        check_eq(msg.get("text"), "hi", "one thread fans out as before")
        await a.close()
        await b.close()



def _usable_cpus():
    """What rtwsd counts: the affinity mask, cut by a cgroup v2 CPU quota."""
    cpus = len(os.sched_getaffinity(0))
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return cpus


async def test_default_follows_usable_cpus():
    """GATEWAY_THREADS unset: one service thread per CPU the process may use,
    so a node pinned to one CPU (taskset, systemd's CPUAffinity=, a
    container's cpuset) runs one, not one per CPU of the host."""
    cpus = os.sched_getaffinity(0)
    want = min(_usable_cpus(), 64)
    with Server({}) as srv:
        line = re.search(r"with (\d+) service threads?", srv.log_text())
        check(line is not None and int(line.group(1)) == want,
              f"unpinned, it runs one service thread per usable CPU ({want})",
              line.group(0) if line else srv.log_tail())
    pinned = Server({})
    os.sched_setaffinity(0, {min(cpus)})        # rtwsd inherits it
    try:
        pinned.start()
    finally:
        os.sched_setaffinity(0, cpus)
    try:
        line = re.search(r"with (\d+) service threads?", pinned.log_text())
        check(line is not None and int(line.group(1)) == 1,
              "pinned to one CPU, it runs one service thread",
              line.group(0) if line else pinned.log_tail())
        a = await connect(pinned.port, "r1", token=mint("a"))
        await a.close()
    finally:
        pinned.stop()


if __name__ == "__main__":
    main([test_room_spans_threads, test_caps_span_threads, test_drain_all_threads,
          test_port_held_elsewhere_refused, test_member_before_its_101, test_places_given_back,
          test_one_thread, test_default_follows_usable_cpus], per_test_timeout=40,
         watchdog=190)
