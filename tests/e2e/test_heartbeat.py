"""Heartbeat and idle timeout (docs/PROTOCOL.md section 3). Time is the
behaviour under test here, so these cases wait on the clock on purpose."""

import asyncio
import json
import time

import websockets.exceptions

from rtws_harness import *


async def test_server_pings_every_interval():
    with Server({"HEARTBEAT_INTERVAL": "1", "IDLE_TIMEOUT": "30"}) as srv:
        ws = await connect(srv.port, "hb")
        pings, others = [], []
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            try:
                msg = await recv_frame_json(ws, end - time.monotonic(), "heartbeat")
            except Failure as e:
                if "nothing received" in str(e):
                    break
                raise
            if isinstance(msg, dict) and msg.get("type") == "system.ping":
                pings.append((time.monotonic(), time.time(), msg))
            else:
                others.append(msg)
        check(2 <= len(pings) <= 5,
              "with HEARTBEAT_INTERVAL=1 the server sends a system.ping about every second "
              "(2..5 in 3.5 s)", f"{len(pings)} pings")
        check(not others, "an idle connection receives nothing but heartbeats", repr(others))
        for _, wall, msg in pings:
            check_eq(set(msg), {"type", "id", "version", "ts"},
                     "system.ping has exactly type, id, version, ts")
            check_eq((msg.get("id"), msg.get("version")), (None, 1),
                     "system.ping has id null and version 1")
            ts = msg.get("ts")
            check(isinstance(ts, (int, float)) and not isinstance(ts, bool)
                  and abs(ts - wall) < 2, "system.ping ts is the current Unix time in seconds",
                  repr(ts))
        gaps = [b[0] - a[0] for a, b in zip(pings, pings[1:])]
        check(all(0.5 <= g <= 1.8 for g in gaps),
              "heartbeats are spaced by about HEARTBEAT_INTERVAL", repr(gaps))
        await ws.close()


async def _idle_client(srv, what, activity=None, room="idle"):
    """Connects, optionally keeps doing `activity` (never a data frame), and
    returns (close code, reason, seconds until closed)."""
    ws = await connect(srv.port, room)
    t0 = time.monotonic()
    task = asyncio.ensure_future(activity(ws)) if activity else None
    try:
        code, reason, _ = await expect_close(ws, 5.0)
    finally:
        if task:
            task.cancel()
    return code, reason, time.monotonic() - t0


async def _active_client(srv, send, period=0.5, room="busy", stay=4.2):
    """Sends a data frame every period for `stay` seconds; True when the
    connection was never closed and still answers a ping at the end."""
    ws = await connect(srv.port, room)
    end = time.monotonic() + stay
    try:
        while time.monotonic() < end:
            await send(ws)
            await asyncio.sleep(period)          # the pace of activity is the test
        # Deliveries of the chatty clients may be queued ahead of the ack.
        await ws.send('{"type":"system.ping","id":"still-here"}')
        while True:
            msg = await recv_json(ws, 2.0, "ack of the active client's ping")
            if msg.get("type") != "chat.delivery":
                ok = msg == {"type": "system.ack", "id": None, "version": 1,
                             "ref": "still-here"}
                return ok, msg
    except websockets.exceptions.ConnectionClosed as e:
        return False, f"closed with {e.code} {e.reason!r}"
    except Failure as e:
        return False, str(e)
    finally:
        await ws.close()


async def test_idle_timeout_and_activity():
    with Server({"HEARTBEAT_INTERVAL": "1", "IDLE_TIMEOUT": "2"}) as srv:

        async def ws_pings(ws):
            try:
                while True:
                    await asyncio.sleep(0.5)
                    await ws.ping()
            except websockets.exceptions.ConnectionClosed:
                pass

        async def pong(ws):
            await ws.send('{"type":"system.pong"}')

        async def chat(ws):
            await ws.send('{"type":"chat.message","text":"tick"}')

        silent, listener, pinger, ponger, talker = await asyncio.gather(
            _idle_client(srv, "silent"),
            _idle_client(srv, "listener", room="busy"),
            _idle_client(srv, "ws-pinger", activity=ws_pings),
            _active_client(srv, pong),
            _active_client(srv, chat))

        for (code, reason, dt), who in ((silent, "a client that sends nothing"),
                                        (listener, "a client that only receives messages"),
                                        (pinger, "a client that only sends WebSocket "
                                                 "control pings (no data frames)")):
            check_eq((code, reason), (1000, "idle timeout"),
                     f"{who} is closed with 1000 'idle timeout'")
            check(1.9 <= dt <= 3.5,
                  f"{who} is closed within one second after IDLE_TIMEOUT=2",
                  f"closed after {dt:.2f} s")
        check(ponger[0], "a client sending system.pong every 0.5 s stays connected past 4 s "
                         "(every data frame resets the idle timer)", repr(ponger[1]))
        check(talker[0], "a client sending chat.message every 0.5 s stays connected past 4 s",
              repr(talker[1]))


async def test_many_connections_keep_their_own_deadlines():
    """Every connection's heartbeat and idle deadline is kept, not only one:
    300 connections opened over a second (their deadlines spread over the
    gateway's timer wheel) each get pings about every second, and the ones
    that stay silent are closed at IDLE_TIMEOUT while the talkers stay."""
    with Server({"HEARTBEAT_INTERVAL": "1", "IDLE_TIMEOUT": "3", "GATEWAY_THREADS": "2"}) as srv:
        conns = []
        for i in range(300):
            conns.append(await connect(srv.port, f"w{i % 7}", token=mint(f"w{i}")))
            if i % 30 == 29:
                await asyncio.sleep(0.1)
        talkers = conns[:100]

        async def talk(ws, i):
            for k in range(5):
                await asyncio.sleep(0.8)
                await ws.send(json.dumps({"type": "system.ping", "id": f"t{i}-{k}"}))

        async def count_until_closed(ws, seconds):
            pings, code = 0, None
            deadline = time.monotonic() + seconds
            try:
                while time.monotonic() < deadline:
                    raw = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
                    if '"system.ping"' in raw:
                        pings += 1
            except asyncio.TimeoutError:
                pass
            except websockets.exceptions.ConnectionClosed as e:
                code = (e.code, e.reason)
            return pings, code

        tasks = [asyncio.create_task(talk(ws, i)) for i, ws in enumerate(talkers)]
        results = await asyncio.gather(*(count_until_closed(ws, 4.6) for ws in conns))
        for t in tasks:
            t.cancel()
        quiet_closed = [r[1] for r in results[100:]]
        check(all(c == (1000, "idle timeout") for c in quiet_closed),
              "each of 200 silent connections is closed 1000 idle timeout",
              repr([c for c in quiet_closed if c != (1000, "idle timeout")][:5]))
        check(all(r[1] is None for r in results[:100]),
              "each of 100 talking connections stays open past IDLE_TIMEOUT",
              repr([r[1] for r in results[:100] if r[1] is not None][:5]))
        few = [r[0] for r in results[:100] if r[0] < 3]
        check(not few, "each talking connection got a heartbeat about every second "
                       "(at least 3 in 4.6 s)", repr(few[:10]))
        for ws in talkers:
            await ws.close()


if __name__ == "__main__":
    main([test_server_pings_every_interval, test_idle_timeout_and_activity,
          test_many_connections_keep_their_own_deadlines],
         per_test_timeout=30, watchdog=90)
