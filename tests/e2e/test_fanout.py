"""Fan-out: chat.delivery reaches every connection of the room exactly once,
sender included, in publish order, and nothing leaks to other rooms
(docs/PROTOCOL.md sections 2 rule 4 and 3)."""

import asyncio
import json
import socket
import time

from rtws_harness import *

FIELDS = {"type", "room", "user", "text", "id", "ts"}


async def deliveries(ws, n, what, timeout=5.0):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        msg = await recv_json(ws, max(0.01, deadline - time.monotonic()),
                              f"{what} ({len(out)} of {n} received)")
        out.append(msg)
    return out


async def test_delivery_to_room_only():
    with Server() as srv:
        alice = await connect(srv.port, "r1", token=mint("alice"))
        bob = await connect(srv.port, "r1", token=mint("bob"))
        carol = await connect(srv.port, "r1", token=mint("carol"))
        dave = await connect(srv.port, "r2", token=mint("dave"))
        t0 = time.time()
        await alice.send(json.dumps({"type": "chat.message", "text": "hello r1", "id": "m-1"}))
        for name, ws in (("alice", alice), ("bob", bob), ("carol", carol)):
            msg = await recv_json(ws, what=f"{name}'s delivery of m-1")
            check_eq(set(msg), FIELDS, f"chat.delivery to {name} has exactly the fields "
                                       f"type, room, user, text, id, ts")
            want = {"type": "chat.delivery", "room": "r1", "user": "alice",
                    "text": "hello r1", "id": "m-1"}
            check_eq({k: msg.get(k) for k in want}, want,
                     f"chat.delivery to {name} carries room, sender's user id, text and "
                     f"the client's id")
            ts = msg.get("ts")
            check(isinstance(ts, float) and t0 - 2 <= ts <= time.time() + 2,
                  f"ts at {name} is Unix seconds as a JSON number with a fraction",
                  repr(ts))
        # r2 got nothing: dave's own publish is the very next frame he sees (the
        # router handled alice's publish before it, so a leak would come first).
        await dave.send('{"type":"chat.message","text":"hello r2","id":"d-1"}')
        msg = await recv_json(dave, what="dave's own delivery in r2")
        check(msg.get("type") == "chat.delivery" and msg.get("id") == "d-1"
              and msg.get("room") == "r2",
              "a chat.message in r1 is not delivered to a connection in r2", repr(msg))
        # And dave's r2 message did not reach r1.
        await alice.send('{"type":"chat.message","text":"again","id":"m-2"}')
        for name, ws in (("alice", alice), ("bob", bob), ("carol", carol)):
            msg = await recv_json(ws, what=f"{name}'s delivery of m-2")
            check(msg.get("id") == "m-2",
                  f"each r1 member gets m-1 exactly once and nothing from r2 ({name})",
                  repr(msg))
        for ws in (alice, bob, carol, dave):
            await ws.close()


async def test_generated_id_is_shared():
    with Server() as srv:
        a = await connect(srv.port, "r1", token=mint("alice"))
        b = await connect(srv.port, "r1", token=mint("bob"))
        await a.send('{"type":"chat.message","text":"no id"}')
        ma = await recv_json(a, what="sender's delivery of a message without id")
        mb = await recv_json(b, what="peer's delivery of a message without id")
        ida = ma.get("id")
        check(isinstance(ida, str) and HEX32.match(ida),
              "a chat.message without id gets a fresh 32-character lower-case hex id",
              repr(ida))
        check_eq(mb.get("id"), ida, "every recipient sees the same generated id")
        await a.send('{"type":"chat.message","text":"no id"}')
        ma2 = await recv_json(a, what="second message without id")
        check(ma2.get("id") != ida, "each message gets its own generated id", repr(ma2))
        await a.close()
        await b.close()


async def test_order_and_exactly_once():
    n = 200
    # 200 messages in one burst is over the default rate limit (50/s, burst
    # 100); this test is about order, so the limit is off here.
    with Server({"RATE_LIMIT": "0"}) as srv:
        alice = await connect(srv.port, "r1", token=mint("alice"))
        bob = await connect(srv.port, "r1", token=mint("bob"))
        carol = await connect(srv.port, "r1", token=mint("carol"))
        for i in range(n):
            await alice.send(json.dumps({"type": "chat.message", "text": f"n{i}",
                                         "id": f"seq-{i}"}))
        await alice.send('{"type":"chat.message","text":"end","id":"seq-end"}')
        want = [f"seq-{i}" for i in range(n)] + ["seq-end"]
        for name, ws in (("alice", alice), ("bob", bob), ("carol", carol)):
            got = await deliveries(ws, n + 1, f"{name}'s deliveries", timeout=10)
            errors = [m for m in got if m.get("type") != "chat.delivery"]
            check(not errors, f"{n} chat.messages in a burst are all delivered to {name}",
                  f"non-delivery frames: {errors[:3]!r}")
            check_eq([m.get("id") for m in got], want,
                     f"{name} receives a publisher's {n} messages exactly once, in order")
        for ws in (alice, bob, carol):
            await ws.close()


async def _user_of(srv, token, tag):
    ws = await connect(srv.port, "users", token=token)
    try:
        await ws.send(json.dumps({"type": "chat.message", "text": "who", "id": tag}))
        msg = await recv_json(ws, what=f"own delivery of {tag}")
        return msg.get("user")
    finally:
        await ws.close()


async def test_user_id_claims():
    with Server() as srv:
        check_eq(await _user_of(srv, mint(12345), "u1"), "12345",
                 "a numeric sub becomes its decimal string")
        check_eq(await _user_of(srv, mint(None, user_id="u-77"), "u2"), "u-77",
                 "without sub, the user_id claim is the user id")
        check_eq(await _user_of(srv, mint(None, user_id=42), "u3"), "42",
                 "a numeric user_id becomes its decimal string")
        check_eq(await _user_of(srv, mint("s-1", user_id="u-1"), "u4"), "s-1",
                 "sub is preferred over user_id")
        check_eq(await _user_of(srv, mint(None), "u5"), "anon",
                 "without sub and user_id the user is 'anon'")


async def test_room_field_and_text_roundtrip():
    with Server() as srv:
        a = await connect(srv.port, "r1", token=mint("alice"))
        b = await connect(srv.port, "r1", token=mint("bob"))
        await a.send('{"type":"chat.message","text":"same room","room":"r1","id":"rf"}')
        for name, ws in (("alice", a), ("bob", b)):
            msg = await recv_json(ws, what=f"{name}'s delivery of a frame naming its room")
            check(msg.get("type") == "chat.delivery" and msg.get("id") == "rf",
                  "a chat.message whose room equals the path room is delivered", repr(msg))
        text = 'héllo ✓ 😀 "quoted" \\ back\nslash\ttab \u0001 </script>'
        await a.send(json.dumps({"type": "chat.message", "text": text, "id": "rt"}))
        msg = await recv_json(b, what="delivery of a text with escapes and non-ASCII")
        check_eq(msg.get("text"), text,
                 "text (non-ASCII, quotes, backslash, control characters) arrives unchanged")
        msg = await recv_json(a, what="sender's own copy of the escaped text")
        check_eq(msg.get("text"), text, "the sender's copy of the text is unchanged too")
        # Two tabs of the same user each get one copy.
        a2 = await connect(srv.port, "r1", token=mint("alice"))
        await b.send('{"type":"chat.message","text":"to both tabs","id":"tabs"}')
        for name, ws in (("tab 1", a), ("tab 2", a2)):
            msg = await recv_json(ws, what=f"alice's {name}")
            check_eq(msg.get("id"), "tabs", f"each connection of one user gets the message "
                                            f"({name})")
        for ws in (a, a2, b):
            await ws.close()


async def test_queued_frames_arrive_intact():
    """A reader that falls behind gets its queued deliveries written several
    to a send (the gateway merges them): every frame must still arrive
    whole, as its own text frame, in order, small and large mixed. The
    raw client parses each frame header itself."""
    sizes = [1, 90, 125, 126, 127, 200, 4000, 30000, 65535 - 300, 10, 3, 20000] * 3
    with Server({"MAX_MESSAGE_SIZE": "65536", "RATE_LIMIT": "0"}) as srv:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", srv.port))
        r, w = await asyncio.open_connection(sock=sock)
        slow = RawConn(r, w)
        await slow.upgrade(srv.port, "q", token=mint("slow"))
        sender = await connect(srv.port, "q", token=mint("sender"))
        texts = [f"{i:03d}:" + "x" * max(0, n - 4) for i, n in enumerate(sizes)]
        for t in texts:
            await sender.send(json.dumps({"type": "chat.message", "text": t}))
        for i, t in enumerate(texts):
            msg = await recv_json(sender, 5, f"the sender's copy {i}")
            check_eq(msg.get("text"), t, f"the sender gets delivery {i} in order")
        got = []
        while len(got) < len(texts):
            fr = await slow.read_frame(5)
            if fr is None:
                break
            fin, op, payload = fr
            check(fin and op == 0x1, "each queued delivery is one whole text frame",
                  f"fin={fin} opcode={op:#x}")
            msg = json.loads(payload)
            if msg.get("type") == "system.ping":
                continue
            got.append(msg.get("text"))
        check_eq(len(got), len(texts), "every queued delivery reaches the slow reader")
        check(got == texts, "the slow reader gets the deliveries intact and in order",
              repr([i for i, (a, b) in enumerate(zip(got, texts)) if a != b][:5]))
        slow.close()
        await sender.close()


if __name__ == "__main__":
    main([test_delivery_to_room_only, test_generated_id_is_shared, test_order_and_exactly_once,
          test_user_id_claims, test_room_field_and_text_roundtrip,
          test_queued_frames_arrive_intact],
         per_test_timeout=30, watchdog=90)
