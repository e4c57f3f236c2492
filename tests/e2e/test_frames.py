"""Frames: the client-to-server table and the error table of docs/PROTOCOL.md
section 3, one case per row, plus the close codes for binary, oversized and
invalid UTF-8 frames. MAX_MESSAGE_SIZE is 1024 here."""

import json

from rtws_harness import *

MAX = 1024
ENV = {"MAX_MESSAGE_SIZE": str(MAX)}


def err(error, ref=None):
    e = {"type": "system.error", "error": error}
    if ref is not None:
        e["ref"] = ref
    return e


async def still_open(ws, tag, after):
    ok, msg = await ping_ack(ws, tag, what=f"connection stays open after {after}")
    check(ok, f"connection stays open and answers after {after}", f"next frame {msg!r}")


async def test_ping_with_id():
    with Server(ENV) as srv:
        ws = await connect(srv.port, "r1")
        await ws.send(json.dumps({"type": "system.ping", "id": "p-1"}))
        msg = await recv_json(ws, what="ack of system.ping")
        check_eq(msg, {"type": "system.ack", "id": None, "version": 1, "ref": "p-1"},
                 "system.ping with an id is acked with exactly that ref and these fields")
        await ws.close()


async def test_ping_without_id():
    with Server(ENV) as srv:
        ws = await connect(srv.port, "r1")
        refs = []
        for _ in range(2):
            await ws.send('{"type":"system.ping"}')
            msg = await recv_json(ws, what="ack of system.ping without id")
            check_eq(set(msg), {"type", "id", "version", "ref"},
                     "the ack of an id-less ping has exactly type, id, version, ref")
            check_eq((msg.get("type"), msg.get("id"), msg.get("version")),
                     ("system.ack", None, 1), "ack fields of an id-less ping")
            ref = msg.get("ref")
            check(isinstance(ref, str) and HEX32.match(ref),
                  "an id-less ping gets a fresh 32-character lower-case hex ref", repr(ref))
            refs.append(ref)
        check(refs[0] != refs[1], "each id-less ping gets a new ref", repr(refs))
        await ws.close()


async def test_pong_and_ack_get_no_reply():
    with Server(ENV) as srv:
        ws = await connect(srv.port, "r1")
        await ws.send('{"type":"system.pong","id":"x"}')
        await ws.send('{"type":"system.ack","id":null,"version":1,"ref":"y"}')
        await ws.send('{"type":"system.pong"}')
        await expect_silence_then(ws, "after-pong",
                                  "system.pong and system.ack get no reply "
                                  "(the next frame is the ack of a later ping)")
        await ws.close()


async def test_unknown_type():
    with Server(ENV) as srv:
        ws = await connect(srv.port, "r1")
        for t in ("foo.bar", "chat.delivery", "system.error", "CHAT.MESSAGE", ""):
            await ws.send(json.dumps({"type": t, "text": "x"}))
            msg = await recv_json(ws, what=f"reply to type {t!r}")
            check_eq(msg, err("unknown_type"),
                     f"a frame with unknown string type {t!r} gets unknown_type")
            await still_open(ws, f"u-{t}", f"unknown type {t!r}")
        await ws.close()


async def test_bad_json():
    with Server(ENV) as srv:
        ws = await connect(srv.port, "r1")
        for text in ("hello", "[1,2]", "[]", "42", '"str"', "null", "true", "", "{",
                     '{"type":"system.ping"}{"type":"system.ping"}',
                     '{"type":"system.ping","id":"a",}'):
            await ws.send(text)
            msg = await recv_json(ws, what=f"reply to {text!r}")
            check_eq(msg, err("bad_json"), f"text that is not one JSON object ({text!r}) "
                                           f"gets bad_json")
            await still_open(ws, "bj", f"bad JSON {text!r}")
        await ws.close()


async def test_bad_message():
    cases = [
        ({"id": "x1"}, "x1", "an object without type"),
        ({"type": 5, "id": "x2"}, "x2", "a non-string type"),
        ({"type": None, "id": "x3"}, "x3", "a null type"),
        ({"type": "chat.message", "id": "x4"}, "x4", "chat.message without text"),
        ({"type": "chat.message", "text": 5, "id": "x5"}, "x5", "chat.message with numeric text"),
        ({"type": "chat.message", "text": None, "id": "x6"}, "x6", "chat.message with null text"),
        ({"type": "chat.message"}, None, "chat.message without text or id"),
        ({"text": "hi"}, None, "an object without type or id"),
    ]
    with Server(ENV) as srv:
        ws = await connect(srv.port, "r1")
        for frame, ref, what in cases:
            await ws.send(json.dumps(frame))
            msg = await recv_json(ws, what=f"reply to {what}")
            check_eq(msg, err("bad_message", ref),
                     f"{what} gets bad_message" + (f" with ref {ref!r}" if ref else " without ref"))
            await still_open(ws, "bm", what)
        await ws.close()


async def test_room_mismatch():
    with Server(ENV) as srv:
        ws = await connect(srv.port, "r1")
        other = await connect(srv.port, "other", token=mint("bob"))
        await ws.send(json.dumps({"type": "chat.message", "text": "wrong room",
                                  "room": "other"}))
        msg = await recv_json(ws, what="reply to a chat.message for another room")
        check(isinstance(msg, dict) and msg.get("type") == "system.error"
              and msg.get("error") == "room_mismatch"
              and set(msg) <= {"type", "error", "ref"},
              "a chat.message whose room differs from the path room gets room_mismatch",
              repr(msg))
        # Nothing was published, neither to the path room nor to the named one:
        # a later publish in each room is the very next frame there.
        await ws.send('{"type":"chat.message","text":"after","id":"after-1"}')
        msg = await recv_json(ws, what="own delivery after room_mismatch")
        check(msg.get("type") == "chat.delivery" and msg.get("id") == "after-1",
              "a room_mismatch frame is not delivered to the path room", repr(msg))
        await other.send('{"type":"chat.message","text":"mine","id":"other-1"}')
        msg = await recv_json(other, what="own delivery in the other room")
        check(msg.get("type") == "chat.delivery" and msg.get("id") == "other-1",
              "a room_mismatch frame is not delivered to the room it names", repr(msg))
        await ws.close()
        await other.close()


async def test_binary_frame_closes_1003():
    with Server(ENV) as srv:
        ws = await connect(srv.port, "r1")
        await ws.send(b'{"type":"system.ping","id":"bin"}')
        code, reason, frames = await expect_close(ws, 3)
        check_eq(code, 1003, "a binary frame closes the connection with 1003")
        check(not any(isinstance(f, str) and '"system.ack"' in f for f in frames),
              "a binary frame is not processed as a message", repr(frames))


async def test_oversize_frame_closes_1009():
    with Server(ENV) as srv:
        for size in (2000, MAX + 1):
            ws = await connect(srv.port, "r1", compression=None)
            await ws.send("x" * size)
            code, reason, _ = await expect_close(ws, 3)
            check_eq(code, 1009, f"a {size}-byte frame (> MAX_MESSAGE_SIZE {MAX}) closes "
                                 f"with 1009")
        ws = await connect(srv.port, "r1", compression=None)
        await still_open(ws, "after-1009", "another connection was closed with 1009")
        await ws.close()


async def test_exactly_max_size_accepted():
    with Server(ENV) as srv:
        ws = await connect(srv.port, "r1", compression=None)
        frame = {"type": "chat.message", "id": "max-1", "text": ""}
        frame["text"] = "y" * (MAX - len(json.dumps(frame, separators=(",", ":"))))
        text = json.dumps(frame, separators=(",", ":"))
        require(len(text.encode()) == MAX, "test builds a frame of exactly MAX_MESSAGE_SIZE")
        await ws.send(text)
        msg = await recv_json(ws, what="delivery of a MAX_MESSAGE_SIZE frame")
        check(msg.get("type") == "chat.delivery" and msg.get("id") == "max-1"
              and msg.get("text") == frame["text"],
              f"a frame of exactly MAX_MESSAGE_SIZE ({MAX} bytes) is accepted",
              repr(msg)[:200])
        await ws.close()


async def _raw_ws(srv, room="r1"):
    conn = await RawConn.open(srv.port)
    await conn.upgrade(srv.port, room, token=mint("alice"))
    return conn


async def test_invalid_utf8_closes_1007():
    with Server(ENV) as srv:
        for label, payload in (
                ("a lone 0xff byte", b'{"type":"system.ping","id":"\xff"}'),
                ("an overlong encoding", b'{"type":"chat.message","text":"\xc0\xaf"}'),
                ("a UTF-16 surrogate", b'{"type":"chat.message","text":"\xed\xa0\x80"}'),
                ("a truncated sequence", b'{"type":"chat.message","text":"\xe2\x82"}')):
            conn = await _raw_ws(srv)
            await conn.send(ws_frame(0x1, payload))
            code, reason, others = await conn.read_close(3)
            check_eq(code, 1007, f"invalid UTF-8 ({label}) in a text frame closes with 1007")
            conn.close()


async def test_fragmented_message():
    with Server(ENV) as srv:
        conn = await _raw_ws(srv)
        # A ping split in three fragments, the 2-byte 'é' split across two of them.
        whole = '{"type":"system.ping","id":"frag-é"}'.encode()
        cut = whole.index("é".encode()) + 1
        await conn.send(ws_frame(0x1, whole[:10], fin=False)
                        + ws_frame(0x0, whole[10:cut], fin=False)
                        + ws_frame(0x0, whole[cut:], fin=True))
        fr = await conn.read_frame(3)
        msg = json.loads(fr[2]) if fr and fr[1] == 0x1 else fr
        check_eq(msg, {"type": "system.ack", "id": None, "version": 1, "ref": "frag-é"},
                 "a fragmented text message (UTF-8 split across fragments) is reassembled")
        # Fragments each under the limit but together over it are refused.
        await conn.send(ws_frame(0x1, b"[" + b" " * 599, fin=False)
                        + ws_frame(0x0, b" " * 600, fin=False)
                        + ws_frame(0x0, b"]", fin=True))
        code, _, _ = await conn.read_close(3)
        check_eq(code, 1009, "a message reassembled past MAX_MESSAGE_SIZE closes with 1009")
        conn.close()


async def test_reserved_bits_close():
    # RFC 6455 section 5.2: RSV bits without a negotiated extension fail the connection.
    with Server(ENV) as srv:
        conn = await _raw_ws(srv)
        await conn.send(ws_frame(0x1, b'{"type":"system.ping","id":"rsv"}', rsv=0b010))
        code, _, others = await conn.read_close(3)
        check(not any(f[1] == 0x1 for f in others),
              "a frame with a reserved bit set is not processed as a message", repr(others))
        check_eq(code, 1002, "a frame with a reserved bit set closes with 1002")
        conn.close()


if __name__ == "__main__":
    main([test_ping_with_id, test_ping_without_id, test_pong_and_ack_get_no_reply,
          test_unknown_type, test_bad_json, test_bad_message, test_room_mismatch,
          test_binary_frame_closes_1003, test_oversize_frame_closes_1009,
          test_exactly_max_size_accepted, test_invalid_utf8_closes_1007,
          test_fragmented_message, test_reserved_bits_close],
         per_test_timeout=30, watchdog=58)
