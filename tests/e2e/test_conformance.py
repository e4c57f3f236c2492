"""WebSocket protocol conformance over raw sockets (RFC 6455), the ground the
Autobahn testsuite would cover (it is not packaged in Debian or npm): control
frames between fragments, ping/pong, the close handshake, reserved bits and
opcodes, UTF-8 validated across fragment boundaries, and bad continuation."""

import asyncio
import json

from rtws_harness import *

ENV = {"MAX_MESSAGE_SIZE": "4096"}


async def _raw_ws(srv, room="r1"):
    conn = await RawConn.open(srv.port)
    await conn.upgrade(srv.port, room, token=mint("conformance"))
    return conn


async def _next_data(conn, what):
    """The next frame that is not a server heartbeat."""
    while True:
        fr = await conn.read_frame(3)
        if fr is None:
            raise Failure(f"{what}: the connection closed")
        if fr[1] == 0x1 and b'"system.ping"' in fr[2]:
            continue
        return fr


async def test_ping_answered_with_pong():
    with Server(ENV) as srv:
        conn = await _raw_ws(srv)
        await conn.send(ws_frame(0x9, b"are-you-there"))
        fr = await _next_data(conn, "answer to a WebSocket ping")
        check_eq((fr[0], fr[1], fr[2]), (True, 0xA, b"are-you-there"),
                 "a WebSocket ping is answered by a pong with the same payload")
        conn.close()


async def test_control_frames_between_fragments():
    with Server(ENV) as srv:
        conn = await _raw_ws(srv)
        whole = b'{"type":"system.ping","id":"interleaved"}'
        await conn.send(ws_frame(0x1, whole[:12], fin=False)
                        + ws_frame(0x9, b"mid")             # ping between fragments
                        + ws_frame(0x0, whole[12:30], fin=False)
                        + ws_frame(0xA, b"unsolicited")     # pong between fragments
                        + ws_frame(0x0, whole[30:], fin=True))
        first = await _next_data(conn, "the pong")
        check_eq((first[1], first[2]), (0xA, b"mid"),
                 "a ping inside a fragmented message is answered at once")
        second = await _next_data(conn, "the ack")
        msg = json.loads(second[2]) if second[1] == 0x1 else second
        check_eq(msg, {"type": "system.ack", "id": None, "version": 1, "ref": "interleaved"},
                 "the fragmented message around control frames is reassembled")
        conn.close()


async def test_close_handshake_echoed():
    with Server(ENV) as srv:
        conn = await _raw_ws(srv)
        await conn.send(ws_frame(0x8, (1000).to_bytes(2, "big") + b"bye"))
        code, reason, _ = await conn.read_close(3)
        check_eq(code, 1000, "the server answers a client close with a close frame (1000)")
        eof = await conn.read_until_eof(3)
        check(eof, "the server closes TCP after the close handshake")
        conn.close()


async def test_unknown_opcodes_close_1002():
    with Server(ENV) as srv:
        for opcode in (0x3, 0x7, 0xB, 0xF):
            conn = await _raw_ws(srv)
            await conn.send(ws_frame(opcode, b"x"))
            code, _, _ = await conn.read_close(3)
            check_eq(code, 1002, f"reserved opcode {opcode:#x} closes with 1002")
            conn.close()


async def test_continuation_without_start_closes():
    with Server(ENV) as srv:
        conn = await _raw_ws(srv)
        await conn.send(ws_frame(0x0, b"orphan", fin=True))
        code, _, _ = await conn.read_close(3)
        check_eq(code, 1002, "a continuation frame with nothing to continue closes 1002")
        conn.close()
        conn = await _raw_ws(srv)
        await conn.send(ws_frame(0x1, b'{"a":', fin=False)
                        + ws_frame(0x1, b'1}', fin=True))
        code, _, _ = await conn.read_close(3)
        check_eq(code, 1002, "a new text frame inside a fragmented message closes 1002")
        conn.close()


async def test_fragmented_control_frame_closes():
    with Server(ENV) as srv:
        conn = await _raw_ws(srv)
        await conn.send(ws_frame(0x9, b"frag", fin=False))
        code, _, _ = await conn.read_close(3)
        check_eq(code, 1002, "a fragmented control frame closes 1002")
        conn.close()
        conn = await _raw_ws(srv)
        await conn.send(ws_frame(0x9, b"p" * 126))
        code, _, _ = await conn.read_close(3)
        # RFC 6455 5.5 makes this a protocol error; libwebsockets 4.1 drops the
        # TCP connection without a close frame (1006), which RFC 7.1.7 allows.
        check(code in (1002, 1006), "a control frame over 125 bytes fails the connection",
              f"close code {code}")
        conn.close()


async def test_utf8_across_fragments():
    with Server(ENV) as srv:
        # Valid: a 4-byte character split over three fragments.
        conn = await _raw_ws(srv)
        whole = '{"type":"system.ping","id":"😀"}'.encode()
        i = whole.index("😀".encode())
        await conn.send(ws_frame(0x1, whole[:i + 1], fin=False)
                        + ws_frame(0x0, whole[i + 1:i + 3], fin=False)
                        + ws_frame(0x0, whole[i + 3:], fin=True))
        fr = await _next_data(conn, "the ack")
        check_eq(json.loads(fr[2]).get("ref"), "😀",
                 "a character split over three fragments is valid UTF-8")
        conn.close()
        # Invalid: the fragments join into an invalid sequence (a lead byte
        # followed by a lead byte), each fragment alone looking fine.
        conn = await _raw_ws(srv)
        await conn.send(ws_frame(0x1, b'{"type":"chat.message","text":"\xe2', fin=False)
                        + ws_frame(0x0, b'\xe2\x82\xac"}', fin=True))
        code, _, _ = await conn.read_close(3)
        check_eq(code, 1007, "invalid UTF-8 across a fragment boundary closes 1007")
        conn.close()


async def _ack_for(conn, ping_id, what):
    fr = await _next_data(conn, what)
    msg = json.loads(fr[2]) if fr[1] == 0x1 else fr
    check_eq(msg.get("ref") if isinstance(msg, dict) else msg, ping_id, what)


async def test_unmasked_frames_close_1002():
    """RFC 6455 5.1: a client frame without a mask fails the connection with
    1002, wherever the frame's header falls in the client's writes; masked
    frames split anywhere are served."""
    ping = lambda i: ws_frame(0x1, json.dumps({"type": "system.ping", "id": i}))
    bad_ping = json.dumps({"type": "system.ping", "id": "unmasked"}).encode()
    cases = {
        "an unmasked text frame": ws_frame(0x1, bad_ping, mask=False),
        "an unmasked ping": ws_frame(0x9, b"p", mask=False),
        "an unmasked close": ws_frame(0x8, (1000).to_bytes(2, "big"), mask=False),
        "an unmasked empty frame": ws_frame(0x1, b"", mask=False),
        "an unmasked fragment": ws_frame(0x1, bad_ping[:5], fin=False, mask=False),
        "an unmasked 16-bit length frame": ws_frame(0x1, b" " * 300, mask=False),
    }
    with Server(ENV) as srv:
        for name, bad in cases.items():
            conn = await _raw_ws(srv)
            await conn.send(ping("before"))
            await _ack_for(conn, "before", f"{name}: the masked frame before it is served")
            await conn.send(bad)
            code, reason, _ = await conn.read_close(3)
            check_eq(code, 1002, f"{name} closes with 1002")
            conn.close()
        # The header split over writes: byte 0 alone, then the rest.
        for split in (1, 2, 3):
            conn = await _raw_ws(srv)
            bad = ws_frame(0x1, bad_ping, mask=False)
            await conn.send(ping("first"))
            await _ack_for(conn, "first", f"split {split}: the masked frame is served")
            await conn.send(bad[:split])
            await asyncio.sleep(0.2)
            await conn.send(bad[split:])
            code, _, others = await conn.read_close(3)
            check_eq(code, 1002, f"an unmasked frame whose header is split after byte {split} closes 1002")
            check(not any(b'"unmasked"' in fr[2] for fr in others),
                  "the unmasked frame is never answered", repr(others))
            conn.close()
        # A masked frame whose header is split after byte 0 is still served,
        # and masked frames of every length keep working after it.
        conn = await _raw_ws(srv)
        good = ping("split")
        await conn.send(good[:1])
        await asyncio.sleep(0.2)
        await conn.send(good[1:])
        await _ack_for(conn, "split", "a masked frame split after its first byte is served")
        for n in (0, 125, 126, 3000):
            pad = "x" * n
            await conn.send(ws_frame(0x1, json.dumps({"type": "system.ping", "id": f"n{n}", "pad": pad})))
            await _ack_for(conn, f"n{n}", f"a masked {n}-byte padded frame is served")
        conn.close()
        # Byte by byte: every write is one byte, the stream stays in step.
        conn = await _raw_ws(srv)
        stream = ping("b1") + ws_frame(0x9, b"hi") + ping("b2")
        for i in range(len(stream)):
            await conn.send(stream[i:i + 1])
        # The pong comes from the library, the acks through the actors: any order.
        answers = []
        for _ in range(3):
            fr = await _next_data(conn, "answers to frames written one byte at a time")
            answers.append(json.loads(fr[2]).get("ref") if fr[1] == 0x1 else (fr[1], fr[2]))
        check_eq(sorted(answers, key=repr), sorted(["b1", "b2", (0xA, b"hi")], key=repr),
                 "frames written one byte at a time are all answered (two acks, one pong)")
        conn.close()


async def test_unmasked_frame_before_upgrade_closes_1002():
    """A frame sent with the handshake, before the 101 (RFC 6455 4.1 forbids
    it), is judged too: unmasked fails with 1002, masked is served."""
    with Server(ENV) as srv:
        for masked in (True, False):
            conn = await RawConn.open(srv.port)
            req, _ = ws_upgrade_request(srv.port, f"/ws/r1?token={mint('early')}", [])
            frame = ws_frame(0x1, json.dumps({"type": "system.ping", "id": "early"}), mask=masked)
            await conn.send(req + frame)
            status, _ = await conn.read_http_head(3)
            check(status and status.startswith("HTTP/1.1 101"), "the upgrade is answered", repr(status))
            if masked:
                await _ack_for(conn, "early", "a masked frame sent with the handshake is served")
            else:
                code, reason, others = await conn.read_close(3)
                check_eq(code, 1002, "an unmasked frame sent with the handshake closes 1002")
                check_eq(reason, "unmasked frame", "the close reason names the unmasked frame")
            conn.close()


if __name__ == "__main__":
    main([test_ping_answered_with_pong, test_control_frames_between_fragments,
          test_close_handshake_echoed, test_unknown_opcodes_close_1002,
          test_continuation_without_start_closes, test_fragmented_control_frame_closes,
          test_utf8_across_fragments, test_unmasked_frames_close_1002,
          test_unmasked_frame_before_upgrade_closes_1002], per_test_timeout=30, watchdog=170)
