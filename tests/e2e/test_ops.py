"""Operations endpoints and graceful drain (issue 5).

The admin listener (ADMIN_HOST:ADMIN_PORT, plain HTTP): /healthz, /readyz
(memory and Redis engine, Redis down, up, killed), /metrics in the
Prometheus text format, read with Debian's python3-prometheus-client, and
its counters moving with traffic. The drain on SIGTERM: /readyz 503 at
once, new handshakes 503, 1001 closes spread over DRAIN_TIMEOUT, exit 0,
and with Redis the node's presence keys gone afterwards.
"""

import asyncio
import json
import re
import signal
import socket
import time

from rtws_harness import *

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    skip("python3-prometheus-client is not installed (scripts/install-deps)")

# Every metric of the issue, with its type.
METRICS = {
    "rtws_connections": "gauge",
    "rtws_connections_total": "counter",
    "rtws_handshake_rejections_total": "counter",
    "rtws_rooms": "gauge",
    "rtws_messages_received_total": "counter",
    "rtws_messages_published_total": "counter",
    "rtws_deliveries_total": "counter",
    "rtws_received_bytes_total": "counter",
    "rtws_sent_bytes_total": "counter",
    "rtws_drops_total": "counter",
    "rtws_closes_total": "counter",
    "rtws_delivery_latency_seconds": "histogram",
    "rtws_engine_info": "gauge",
}
REDIS_METRICS = {
    "rtws_redis_connected": "gauge",
    "rtws_redis_reconnects_total": "counter",
    "rtws_redis_outbox_depth": "gauge",
    "rtws_redis_dropped_payloads_total": "counter",
}
REJECTION_REASONS = ("bad_room", "bad_origin", "unauthorized", "server_full",
                     "too_many_per_ip", "uri_too_long", "not_found", "unavailable")


class Scrape:
    """One /metrics answer: samples by (name, labels), and the raw text."""

    def __init__(self, status, headers, text):
        self.status, self.headers, self.text = status, headers, text
        self.samples = {}
        self.families = []
        for family in text_string_to_metric_families(text):
            self.families.append(family)
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def get(self, name, **labels):
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def has(self, name):
        return any(key[0] == name for key in self.samples)

    def described(self, name, typ):
        """True when the text has both '# HELP name' and '# TYPE name typ'."""
        return (re.search(rf"^# HELP {re.escape(name)} \S", self.text, re.M) is not None
                and re.search(rf"^# TYPE {re.escape(name)} {typ}$", self.text, re.M)
                is not None)


async def scrape(srv):
    status, headers, body = await http_get(srv.admin_port, "/metrics")
    require(status == 200, "GET /metrics answers 200", f"status {status}: {body[:200]!r}")
    try:
        return Scrape(status, headers, body)
    except Exception as e:     # the parser's own complaint names the line
        raise Failure(f"/metrics is not valid Prometheus text: {e}; text:\n{body[:2000]}")


async def scrape_until(srv, cond, timeout=3.0):
    """Scrapes until cond(scrape) holds (STATS reach the gateway once a
    second); returns (ok, last scrape)."""
    deadline = time.monotonic() + timeout
    while True:
        m = await scrape(srv)
        if cond(m):
            return True, m
        if time.monotonic() >= deadline:
            return False, m
        await asyncio.sleep(0.05)   # polling with a deadline


async def readyz(srv):
    status, _, body = await http_get(srv.admin_port, "/readyz")
    return status, body.strip()


async def wait_ready(srv, want_status, timeout):
    """Polls /readyz until it answers want_status; (ok, (status, body), seconds)."""
    start = time.monotonic()
    last = [None]

    async def probe():
        last[0] = await readyz(srv)
        return last[0][0] == want_status
    deadline = start + timeout
    while True:
        if await probe():
            return True, last[0], time.monotonic() - start
        if time.monotonic() >= deadline:
            return False, last[0], time.monotonic() - start
        await asyncio.sleep(0.05)   # polling with a deadline


# --------------------------------------------------------------------------
# Health and readiness

async def test_health_ready_memory():
    with Server() as srv:
        check(isinstance(srv.admin_port, int) and srv.admin_port > 0,
              "the harness gives every server its own admin port", repr(srv.admin_port))
        status, headers, body = await http_get(srv.admin_port, "/healthz")
        check_eq((status, body.strip()), (200, "ok"), "GET /healthz answers 200 ok")
        check(headers.get("content-type", "").startswith("text/plain"),
              "/healthz is text/plain", repr(headers))
        check_eq(await readyz(srv), (200, "ready"),
                 "GET /readyz answers 200 ready with the memory engine")
        status, _, _ = await http_get(srv.admin_port, "/nope")
        check_eq(status, 404, "an unknown admin path answers 404")
        status, _, _ = await http_get(srv.admin_port, "/healthz/x")
        check_eq(status, 404, "only the exact admin paths are served")
        status, headers, _ = await http_get(srv.admin_port, "/metrics", method="POST",
                                            headers=[("Content-Length", "0")])
        check_eq(status, 405, "POST on the admin port answers 405")
        await expect_rejected(srv.admin_port, "r1", 404,
                              "a WebSocket upgrade on the admin port is refused 404")
        # The public side is unchanged: /ws works, plain HTTP is 404 there.
        await expect_accepted(srv.port, "r1", "the public port still upgrades /ws/{room}")
        status, _, _ = await http_get(srv.port, "/healthz")
        check_eq(status, 404, "the admin paths are not served on the public port")
        # Several scrapes in a row on one server, and in parallel.
        results = await asyncio.gather(*(http_get(srv.admin_port, "/healthz")
                                         for _ in range(20)))
        check(all(r[0] == 200 for r in results), "20 parallel /healthz requests all answer 200",
              repr([r[0] for r in results]))


async def test_admin_off_and_port_taken():
    with Server({"ADMIN_PORT": "0"}) as srv:
        check_eq(srv.admin_port, 0, "ADMIN_PORT=0: srv.admin_port is 0")
        await expect_accepted(srv.port, "r1", "ADMIN_PORT=0: the server still serves /ws")
        check("healthz" not in srv.log_text(),
              "ADMIN_PORT=0: no admin listener is announced", srv.log_tail(5))
    # An admin port somebody else holds: the daemon says so and exits 1.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        rc, out, err = await asyncio.to_thread(
            run_once, {"HOST": "127.0.0.1", "PORT": str(free_port()), "JWT_SECRET": SECRET,
                       "ADMIN_HOST": "127.0.0.1", "ADMIN_PORT": str(taken)}, (), 10)
    check_eq(rc, 1, "an admin port in use stops start-up with status 1")
    check(re.search(rf"cannot listen on 127\.0\.0\.1:{taken} \(ADMIN_PORT\)", out + err),
          "the log names the admin address that could not be bound", (out + err)[-500:])


async def test_ready_redis():
    with RedisServer(start=False) as redis:
        with Server({"REDIS_URL": redis.url}) as srv:
            status, body = await readyz(srv)
            check_eq((status, body), (503, "redis disconnected"),
                     "Redis down at start-up: /readyz 503 redis disconnected")
            status, _, _ = await http_get(srv.admin_port, "/healthz")
            check_eq(status, 200, "Redis down: /healthz still 200 (the process is alive)")
            m = await scrape(srv)
            check_eq(m.get("rtws_redis_connected"), 0.0, "Redis down: rtws_redis_connected 0")
            check_eq(m.get("rtws_engine_info", engine="redis"), 1.0,
                     'rtws_engine_info{engine="redis"} 1')

            redis.start()
            # The bridge retries after 1 s, 2 s, 4 s...: allow a few rounds.
            ok, last, took = await wait_ready(srv, 200, 12.0)
            check(ok and last[1] == "ready", "once Redis is up /readyz turns 200 ready",
                  f"last {last!r} after {took:.1f} s")
            m = await scrape(srv)
            check_eq(m.get("rtws_redis_connected"), 1.0, "Redis up: rtws_redis_connected 1")
            check_eq(m.get("rtws_redis_reconnects_total"), 0.0,
                     "a first connection is not counted as a reconnect")

            redis.kill()
            ok, last, took = await wait_ready(srv, 503, 3.0)
            check(ok and last[1] == "redis disconnected",
                  "Redis killed: /readyz turns 503 redis disconnected", f"last {last!r}")
            check(took < 1.5, "/readyz follows the loss of Redis within about a second",
                  f"took {took:.2f} s")
            await expect_accepted(srv.port, "r1",
                                  "while Redis is down the node still accepts connections")

            redis.start()
            ok, last, took = await wait_ready(srv, 200, 12.0)
            check(ok, "Redis back: /readyz 200 again", f"last {last!r} after {took:.1f} s")
            ok, m = await scrape_until(srv, lambda m: m.get("rtws_redis_reconnects_total") == 1.0)
            check(ok, "rtws_redis_reconnects_total counts the reconnection",
                  repr(m.get("rtws_redis_reconnects_total")))
            for name, typ in REDIS_METRICS.items():
                check(m.described(name, typ), f"{name} has # HELP and # TYPE {typ}")
            check_eq(m.get("rtws_redis_outbox_depth"), 0.0, "the outbox is empty again")
            # A backend's junk on a room this node serves is dropped and counted.
            ws = await connect(srv.port, "junk")
            r = redis.client()
            ok, _ = await wait_numsub(r, "junk", 1)
            require(ok, "the node subscribes room:junk")
            r.publish("room:junk", "not json")
            ok, m = await scrape_until(
                srv, lambda m: m.get("rtws_redis_dropped_payloads_total", reason="not_json") == 1.0)
            check(ok, 'a non-JSON payload counts in rtws_redis_dropped_payloads_total'
                      '{reason="not_json"}',
                  repr(m.get("rtws_redis_dropped_payloads_total", reason="not_json")))
            await ws.close()


# --------------------------------------------------------------------------
# Metrics

async def test_metrics_format_and_counters():
    with Server({"MAX_CONNECTIONS": "2"}) as srv:
        m0 = await scrape(srv)
        check(m0.headers.get("content-type", "").startswith("text/plain; version=0.0.4"),
              "/metrics is text/plain; version=0.0.4", repr(m0.headers.get("content-type")))
        for name, typ in METRICS.items():
            check(m0.described(name, typ), f"{name} has # HELP and # TYPE {typ}")
            check(m0.has(name) or m0.has(name + "_count"), f"{name} is exposed")
        # Every sample belongs to a described metric.
        for (name, _labels) in m0.samples:
            base = re.sub(r"_(bucket|sum|count)$", "", name) \
                if name.startswith("rtws_delivery_latency_seconds") else name
            check(re.search(rf"^# TYPE {re.escape(base)} ", m0.text, re.M),
                  f"sample {name} has a # TYPE line")
        check_eq(m0.get("rtws_engine_info", engine="memory"), 1.0,
                 'the memory engine is rtws_engine_info{engine="memory"} 1')
        check(not m0.has("rtws_redis_connected"),
              "rtws_redis_* metrics exist only with the Redis engine")
        for reason in REJECTION_REASONS:
            check_eq(m0.get("rtws_handshake_rejections_total", reason=reason), 0.0,
                     f"rejections{{reason={reason}}} starts at 0")
        check_eq(m0.get("rtws_connections"), 0.0, "no connection at start")

        # Traffic: two clients in one room, alice sends three messages.
        a = await connect(srv.port, "room1", token=mint("alice"))
        b = await connect(srv.port, "room1", token=mint("bob"))
        sent = 0
        for i in range(3):
            text = json.dumps({"type": "chat.message", "text": f"hello {i}", "id": f"m{i}"})
            sent += len(text)
            await a.send(text)
        for ws in (a, b):
            frames = await recv_until(ws, lambda f: len(f) >= 3, 3.0, "three deliveries")
            check(all(f.get("type") == "chat.delivery" for f in frames),
                  "both clients get the three deliveries", repr(frames))
        ok, m = await scrape_until(srv, lambda m: m.get("rtws_rooms") == 1.0)
        check(ok, "rtws_rooms counts the one room (STATS from the router)",
              repr(m.get("rtws_rooms")))
        check_eq(m.get("rtws_connections"), 2.0, "rtws_connections counts the open connections")
        check_eq(m.get("rtws_connections_total"), 2.0, "rtws_connections_total counts upgrades")
        check_eq(m.get("rtws_messages_received_total"), 3.0,
                 "rtws_messages_received_total counts the client's messages")
        check_eq(m.get("rtws_messages_published_total"), 3.0,
                 "rtws_messages_published_total counts the published chat.messages")
        check_eq(m.get("rtws_deliveries_total"), 6.0,
                 "rtws_deliveries_total counts the frames written (3 messages x 2 recipients)")
        check_eq(m.get("rtws_received_bytes_total"), float(sent),
                 "rtws_received_bytes_total counts the payload bytes received")
        check(m.get("rtws_sent_bytes_total") > 6 * 60,
              "rtws_sent_bytes_total counts the bytes written", repr(m.get("rtws_sent_bytes_total")))
        count = m.get("rtws_delivery_latency_seconds_count")
        check_eq(count, 6.0, "the latency histogram observes each delivery per recipient")
        inf = m.get("rtws_delivery_latency_seconds_bucket", le="+Inf")
        check_eq(inf, count, "the +Inf bucket equals the count")
        buckets = sorted(((float(labels[0][1]), v) for (name, labels), v in m.samples.items()
                          if name == "rtws_delivery_latency_seconds_bucket"),
                         key=lambda x: x[0])
        check(all(x[1] <= y[1] for x, y in zip(buckets, buckets[1:])),
              "histogram buckets are cumulative", repr(buckets))
        check(len(buckets) >= 10 and buckets[0][0] <= 0.0001 and buckets[-2][0] >= 5,
              "buckets span 0.0001 s to 5 s", repr([b[0] for b in buckets]))
        check(0 <= m.get("rtws_delivery_latency_seconds_sum") < 6 * 1.0,
              "the latency sum is plausible on loopback",
              repr(m.get("rtws_delivery_latency_seconds_sum")))

        # At MAX_CONNECTIONS the node is full: 503 server_full, /readyz 503 full.
        await expect_rejected(srv.port, "room1", 503, "a third handshake over MAX_CONNECTIONS=2")
        check_eq(await readyz(srv), (503, "full"), "/readyz says 503 full at MAX_CONNECTIONS")
        # A client close is counted by its code.
        await b.close()
        ok, m = await scrape_until(srv, lambda m: m.get("rtws_connections") == 1.0)
        check(ok, "rtws_connections drops when a client leaves", repr(m.get("rtws_connections")))
        check_eq(m.get("rtws_closes_total", code="1000", reason="client closed"), 1.0,
                 'a client close 1000 counts in rtws_closes_total{code="1000",'
                 'reason="client closed"}')
        check_eq(await readyz(srv), (200, "ready"), "/readyz is 200 again below the limit")
        # Below the limit, each handshake check refuses for its own reason.
        await expect_rejected(srv.port, "bad.room", 400, "a bad room")
        await expect_rejected(srv.port, "room1", 401, "no token", token=None)
        conn = await RawConn.open(srv.port)
        await conn.send(ws_upgrade_request(srv.port, "/other")[0])
        status, _ = await conn.read_http_head()
        conn.close()
        check(status and " 404 " in status + " ", "an upgrade outside /ws/ is 404", repr(status))
        m = await scrape(srv)
        for reason, want in (("server_full", 1), ("bad_room", 1), ("unauthorized", 1),
                             ("not_found", 1), ("bad_origin", 0)):
            check_eq(m.get("rtws_handshake_rejections_total", reason=reason), float(want),
                     f"rejections{{reason={reason}}} counts {want}")
        await a.close()


async def test_metrics_drops_and_closes():
    with Server({"RATE_LIMIT": "1", "RATE_BURST": "2"}) as srv:
        ws = await connect(srv.port, "r1")
        for i in range(3):
            await ws.send(json.dumps({"type": "system.ping", "id": f"p{i}"}))
        frames = await recv_until(ws, lambda f: len(f) >= 3, 3.0, "two acks and one refusal")
        check(any(f.get("error") == "rate_limited" for f in frames),
              "the third frame in a burst of 2 is rate_limited", repr(frames))
        raw = await RawConn.open(srv.port)
        await raw.upgrade(srv.port, "r1", token=mint("carol"))
        await raw.send(ws_frame(0x2, b"\x00\x01"))
        code, _, _ = await raw.read_close()
        check_eq(code, 1003, "a binary frame is closed 1003")
        raw.close()
        ok, m = await scrape_until(
            srv, lambda m: m.get("rtws_closes_total", code="1003", reason="binary frame") == 1.0)
        check(ok, 'the 1003 close counts in rtws_closes_total{code="1003",reason="binary frame"}',
              repr(m.get("rtws_closes_total", code="1003", reason="binary frame")))
        check_eq(m.get("rtws_drops_total", reason="rate_limited"), 1.0,
                 'the refused frame counts in rtws_drops_total{reason="rate_limited"}')
        check_eq(m.get("rtws_delivery_latency_seconds_count"), 0.0,
                 "acks and errors carry no accept time: the histogram stays empty")
        await ws.close()


# --------------------------------------------------------------------------
# Drain

async def _close_time(ws, timeout):
    code, reason, _ = await expect_close(ws, timeout)
    return code, reason, time.monotonic()


async def test_drain_spreads_closes():
    clients = 20
    with Server({"DRAIN_TIMEOUT": "2"}) as srv:
        conns = [await connect(srv.port, "drain", token=mint(f"u{i}")) for i in range(clients)]
        ok, m = await scrape_until(srv, lambda m: m.get("rtws_connections") == float(clients))
        require(ok, f"{clients} clients are connected before the drain")
        closes = [asyncio.ensure_future(_close_time(ws, 8.0)) for ws in conns]
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        ok, last, took = await wait_ready(srv, 503, 1.0)
        check(ok and last[1] == "draining", "SIGTERM: /readyz turns 503 draining at once",
              f"last {last!r} after {took:.2f} s")
        status, _, _ = await http_get(srv.admin_port, "/healthz")
        check_eq(status, 200, "during the drain /healthz still answers 200")
        await expect_rejected(srv.port, "drain", 503, "a new handshake during the drain is 503")
        m = await scrape(srv)
        check_eq(m.get("rtws_draining"), 1.0, "rtws_draining is 1 during the drain")
        results = await asyncio.gather(*closes)
        rc = await srv.wait_exit_async(2 + 4.0)
        codes = [r[0] for r in results]
        check(all(c == 1001 for c in codes), "every client sees 1001 during the drain", repr(codes))
        check(all(r[1] == "going away" for r in results), 'with reason "going away"',
              repr({r[1] for r in results}))
        times = sorted(r[2] - t0 for r in results)
        spread = times[-1] - times[0]
        check(spread >= 1.0, "the 1001 closes are spread over DRAIN_TIMEOUT=2 s "
                             "(first and last at least 1 s apart)",
              f"closes at {[round(t, 2) for t in times]}")
        check(times[-1] <= 2 + 1.0, "the last close comes within DRAIN_TIMEOUT",
              f"last close after {times[-1]:.2f} s")
        first_half = sum(1 for t in times if t < times[0] + spread / 2)
        check(5 <= first_half <= 15, "the closes are spread evenly, not bunched",
              f"{first_half} of {clients} in the first half: {[round(t, 2) for t in times]}")
        check_eq(rc, 0, "rtwsd exits 0 after the drain, within DRAIN_TIMEOUT + a few s")
        check(re.search(r"drained 20 connections", srv.log_text()),
              "the log says how many connections were drained", srv.log_tail(5))


async def test_drain_idle_is_fast():
    with Server({"DRAIN_TIMEOUT": "10"}) as srv:
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        rc = await srv.wait_exit_async(5.0)
        took = time.monotonic() - t0
        check_eq(rc, 0, "an idle node exits 0 on SIGTERM")
        check(took < 1.5, "an idle node does not wait for DRAIN_TIMEOUT", f"took {took:.2f} s")


async def test_drain_second_signal_exits_at_once():
    with Server({"DRAIN_TIMEOUT": "30"}) as srv:
        conns = [await connect(srv.port, "r1", token=mint(f"s{i}")) for i in range(5)]
        srv.send_signal(signal.SIGTERM)
        ok, last, _ = await wait_ready(srv, 503, 1.0)
        require(ok, "the drain has begun", repr(last))
        t0 = time.monotonic()
        srv.send_signal(signal.SIGINT)
        rc = await srv.wait_exit_async(3.0)
        took = time.monotonic() - t0
        check(rc is not None and took < 1.5, "a second signal during the drain exits at once",
              f"rc {rc!r} after {took:.2f} s")
        check_eq(rc, 1, "the second signal exits with status 1")
        for ws in conns:
            await ws.close()


async def test_drain_removes_presence_keys():
    with RedisServer() as redis:
        r = redis.client()
        with Server({"REDIS_URL": redis.url, "DRAIN_TIMEOUT": "1"}) as srv:
            ok, last, _ = await wait_ready(srv, 200, 12.0)
            require(ok, "the node connects to Redis", repr(last))
            users = [("alice", "r1"), ("bob", "r1"), ("carol", "r2"), ("alice", "r2")]
            conns = [await connect(srv.port, room, token=mint(user)) for user, room in users]
            keys = [presence_key(user, room) for user, room in users]
            ok, _ = await poll_until(lambda: all(r.exists(k) for k in keys), 5.0)
            require(ok, "every connection's presence key is in Redis before the drain",
                    repr({k: r.exists(k) for k in keys}))
            closes = [asyncio.ensure_future(expect_close(ws, 6.0)) for ws in conns]
            srv.send_signal(signal.SIGTERM)
            results = await asyncio.gather(*closes)
            rc = await srv.wait_exit_async(1 + 5.0)
            check(all(c == 1001 for c, _, _ in results), "each client sees 1001",
                  repr([c for c, _, _ in results]))
            check_eq(rc, 0, "the drained node exits 0")
            left = [k for k in r.keys("rt:presence:*")]
            check(not left, "after the drain none of the node's presence keys is left in Redis "
                            "(the DOWNs reached Redis before the bridge stopped)", repr(left))


if __name__ == "__main__":
    main([test_health_ready_memory, test_admin_off_and_port_taken, test_ready_redis,
          test_metrics_format_and_counters, test_metrics_drops_and_closes,
          test_drain_spreads_closes, test_drain_idle_is_fast,
          test_drain_second_signal_exits_at_once, test_drain_removes_presence_keys],
         per_test_timeout=60, watchdog=240)
