#!/usr/bin/python3
"""seeds.py - writes the seed corpus of every fuzz target (tests/fuzz/corpus).

Run it from anywhere after changing a list below: it rewrites
tests/fuzz/corpus/<target>/ with one small, named file per case. The cases
follow docs/PROTOCOL.md (every row of the frame tables, the handshake's token
sources, the Redis channel layout) and the table tests in tests/. Tokens are
signed here (HS*) or with the fixture keys through openssl (RS256, ES256),
with fixed claims, so running it twice writes the same HS* files.
"""
import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures")
CORPUS = os.path.join(HERE, "corpus")
SECRET = b"change-me"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj):
    text = obj if isinstance(obj, str) else json.dumps(obj, separators=(",", ":"))
    return b64url(text.encode())


def hs(header, claims, alg="HS256", secret=SECRET):
    signing = segment(header) + "." + segment(claims)
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    mac = hmac.new(secret, signing.encode(), digest).digest()
    return signing + "." + b64url(mac)


def openssl_signed(alg, key_file, claims):
    """RS256 / ES256 with a fixture key (ES: DER signature turned into r||s)."""
    header = {"alg": alg, "typ": "JWT"}
    signing = segment(header) + "." + segment(claims)
    key = os.path.join(FIXTURES, key_file)
    try:
        der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key],
                             input=signing.encode(), capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    if alg.startswith("ES"):
        # SEQUENCE { INTEGER r, INTEGER s } -> 32-byte r || 32-byte s
        def integer(data, at):
            assert data[at] == 2
            size = data[at + 1]
            return data[at + 2:at + 2 + size], at + 2 + size
        at = 2 if der[1] < 0x80 else 3
        r, at = integer(der, at)
        s, _ = integer(der, at)
        der = r[-32:].rjust(32, b"\0") + s[-32:].rjust(32, b"\0")
    return signing + "." + b64url(der)


ALICE = {"sub": "alice", "exp": 4102444800}
HS256 = {"alg": "HS256", "typ": "JWT"}
GOOD = hs(HS256, ALICE)


def codec_seeds():
    frames = {
        # client to server table
        "chat_message": {"type": "chat.message", "text": "hi"},
        "chat_message_id": {"type": "chat.message", "text": "hi", "id": "m1"},
        "chat_message_room": {"type": "chat.message", "text": "hi", "room": "lobby"},
        "chat_message_room_null": {"type": "chat.message", "text": "hi", "room": None},
        "chat_message_id_null": {"type": "chat.message", "text": "hi", "id": None},
        "chat_message_empty_text": {"type": "chat.message", "text": ""},
        "chat_message_unicode": {"type": "chat.message", "text": "h\u00e9llo \u2713 \U0001f600"},
        "system_ping": {"type": "system.ping"},
        "system_ping_id": {"type": "system.ping", "id": "p1"},
        "system_ping_numeric_id": {"type": "system.ping", "id": 7},
        "system_pong": {"type": "system.pong"},
        "system_ack": {"type": "system.ack", "id": None, "version": 1, "ref": "r"},
        "unknown_type": {"type": "chat.typing"},
        "unknown_type_id": {"type": "chat.typing", "id": "u1"},
        "server_type_from_client": {"type": "chat.delivery", "text": "x"},
        "auth_refresh": {"type": "auth.refresh", "token": GOOD},
        "auth_refresh_id": {"type": "auth.refresh", "token": "a.b.c", "id": "r1"},
        "auth_refresh_no_token": {"type": "auth.refresh", "id": "r2"},
        "auth_refresh_numeric_token": {"type": "auth.refresh", "token": 5},
        # error table
        "no_type": {"text": "hi", "id": "n1"},
        "numeric_type": {"type": 1, "id": "n2"},
        "type_null": {"type": None},
        "type_array": {"type": ["chat.message"]},
        "chat_message_no_text": {"type": "chat.message", "id": "m3"},
        "chat_message_numeric_text": {"type": "chat.message", "text": 5},
        "chat_message_numeric_id": {"type": "chat.message", "text": "x", "id": 5},
        "room_mismatch": {"type": "chat.message", "text": "hi", "room": "other", "id": "m4"},
        "room_numeric": {"type": "chat.message", "text": "hi", "room": 1},
        "nested_extra_fields": {"x": [1, {"y": 2}], "text": "hi", "id": "m2", "type": "chat.message"},
    }
    raw = {
        "escapes": b'{"type":"chat.message","text":"a\\"b\\\\c\\nd\\u00e9\\ud83d\\ude00"}',
        "duplicate_keys": b'{"type":"chat.message","text":"one","text":"two"}',
        "whitespace": b' \t\r\n{"type":"chat.message","text":"hi"} \n',
        "nul_escape_in_text": b'{"type":"chat.message","text":"a\\u0000b"}',
        "nul_escape_in_type": b'{"type":"chat.message\\u0000","text":"x"}',
        "nul_escape_in_room": b'{"type":"chat.message","text":"x","room":"lob\\u0000by"}',
        "nul_escape_in_ping_id": b'{"type":"system.ping","id":"p\\u0000q"}',
        "nul_escape_in_token": b'{"type":"auth.refresh","token":"a\\u0000b"}',
        "raw_nul_in_string": b'{"type":"chat.message","text":"a\0b"}',
        "raw_nul_after_object": b'{"type":"system.pong"}\0',
        "not_json": b"hello",
        "array": b'[{"type":"chat.message","text":"x"}]',
        "number": b"42",
        "string": b'"chat.message"',
        "null": b"null",
        "truncated": b'{"type":"chat.message"',
        "trailing_garbage": b'{"type":"chat.message","text":"x"} x',
        "two_objects": b"{}{}",
        "empty_object": b"{}",
        "trailing_comma": b'{"type":"system.pong",}',
        "nan": b'{"type":"system.pong","x":NaN}',
        "bom": b'\xef\xbb\xbf{"type":"system.pong"}',
        "invalid_utf8": b'{"type":"chat.message","text":"\xff"}',
        "overlong_utf8": b'{"type":"chat.message","text":"\xc0\xaf"}',
        "surrogate_escape_alone": b'{"type":"chat.message","text":"\\ud800"}',
        "deep_nesting": b'{"type":"system.pong","x":' + b"[" * 300 + b"]" * 300 + b"}",
        "big_numbers": b'{"type":"system.pong","x":1e999,"y":-0,"z":123456789012345678901234567890}',
        # encoder pieces: user NUL text NUL id NUL room
        "encoder_pieces": b"alice\0hello \xc3\xa9\0m1\0lobby",
        "encoder_invalid_utf8": b"bob\0\xed\xa0\x80\0id\0room",
    }
    out = {name: json.dumps(v, separators=(",", ":"), ensure_ascii=False).encode()
           for name, v in frames.items()}
    out.update(raw)
    return out


def origin_seeds():
    values = [
        "https://example.com", "http://localhost:8080", "http://127.0.0.1:3000",
        "chrome-extension://abcdef", "git+ssh.x://host", "http://a_b~c.example",
        "HTTPS://EXAMPLE.COM", "Http://Example.Com:8443", "https://example.com:443",
        "http://example.com:80", "https://example.com:80", "wss://example.com:443",
        "ws://example.com:80", "http://example.com:080", "http://example.com:65535",
        "http://example.com:65536", "http://example.com:0", "http://[::1]:8080",
        "http://[2001:DB8::A]", "http://[0:0:0:0:0:0:0:1]", "http://[::ffff:1.2.3.4]",
        "http://[::1", "http://[]", "http://[::1]x", "http://[fe80::1%25eth0]",
        "https://example.com/", "https://example.com//", "https://example.com/path",
        "null", "example.com", "https:example.com", "://example.com", "https://",
        "https://:443", "1http://example.com", "https://example.com?x=1",
        "https://user@example.com", "https://example.com@evil.com", "https://exa%6Dple.com",
        "https://example.com\r\n", "https://b\u00fccher.de", "https://xn--bcher-kva.de",
        "http://" + "a" * 1017,
    ]
    return {"o%02d" % i: v.encode() for i, v in enumerate(values)}


def token_seeds():
    values = {
        "query": "token=" + GOOD,
        "query_empty": "token=",
        "query_other_name": "tokens=abc",
        "cookie": "access_token=" + GOOD,
        "cookie_among_others": "theme=dark; access_token=" + GOOD + "; lang=en",
        "cookie_no_space": "a=1;access_token=abc",
        "cookie_padded": "  access_token=abc  ",
        "cookie_prefixed_name": "my_access_token=abc",
        "cookie_empty": "access_token=; b=2",
        "cookie_twice": "access_token=first; access_token=second",
        "cookie_in_value": "a=access_token=abc",
        "cookie_separators": ";;; ;\t;",
        "bearer": "Bearer " + GOOD,
        "bearer_lower": "bearer abc",
        "bearer_spaces": "  BEARER   abc  ",
        "bearer_tab": "Bearer \tabc\tdef",
        "basic": "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "bearer_only": "Bearer",
        "bearer_space_only": "Bearer ",
        "bearer_glued": "Bearerabc",
        "query_rs256_shape": "token=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
        "query_case": "Token=abc",
        "query_no_equals": "token",
        "cookie_tab": "a=1;\taccess_token=abc\tx",
        "cookie_quoted": "access_token=\"abc\"",
        "cookie_last": "session=xyz; theme=dark; access_token=" + GOOD,
        "cookie_bearer_value": "access_token=Bearer%20abc",
        "bearer_tab_before": "\tBearer abc",
        "bearer_tab_after_scheme": "Bearer\tabc",
        "bearer_two_tokens": "Bearer abc def",
        "bearer_mixed_case": "bEaReR " + GOOD,
        "long_query": "token=" + "A" * 8200,
        "long_cookie": "access_token=" + "A" * 8200,
    }
    return {k: v.encode() for k, v in values.items()}


def jwt_seeds():
    tokens = {
        "hs256": GOOD,
        "hs256_no_exp": hs(HS256, {"sub": "alice"}),
        "hs256_numeric_sub": hs(HS256, {"sub": 42, "exp": 4102444800}),
        "hs256_user_id": hs(HS256, {"user_id": "bob"}),
        "hs384": hs({"alg": "HS384", "typ": "JWT"}, ALICE, "HS384"),
        "hs512": hs({"alg": "HS512", "typ": "JWT"}, ALICE, "HS512"),
        "alg_none_empty_sig": segment({"alg": "none", "typ": "JWT"}) + "." + segment(ALICE) + ".",
        "alg_none_sig": segment({"alg": "none"}) + "." + segment(ALICE) + ".c2lnbmF0dXJl",
        "alg_lower": hs({"alg": "hs256", "typ": "JWT"}, ALICE),
        "no_alg": hs({"typ": "JWT"}, ALICE),
        "numeric_alg": hs({"alg": 256}, ALICE),
        "crit": hs({"alg": "HS256", "crit": ["exp"]}, ALICE),
        "typ_other": hs({"alg": "HS256", "typ": "JOSE"}, ALICE),
        "typ_lower": hs({"alg": "HS256", "typ": "jwt"}, ALICE),
        "dup_header": hs('{"alg":"HS256","alg":"none"}', ALICE),
        "dup_payload": hs(HS256, '{"sub":"alice","sub":"admin"}'),
        "header_not_json": segment("hello") + "." + segment(ALICE) + ".c2lnbmF0dXJl",
        "header_array": hs("[1,2]", ALICE),
        "payload_not_object": hs(HS256, "sub=alice"),
        "payload_array": hs(HS256, "[]"),
        "nul_escape_header": hs('{"alg":"HS256\\u0000"}', ALICE),
        "one_segment": "eyJhbGciOiJIUzI1NiJ9",
        "two_segments": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0",
        "four_segments": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln.c2ln",
        "empty_header": ".eyJzdWIiOiJhIn0.c2ln",
        "empty_payload": "eyJhbGciOiJIUzI1NiJ9..c2ln",
        "empty_signature": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.",
        "standard_base64": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.ab+c/d",
        "padding": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0=.c2ln",
        "space": "eyJhbGciOiJIUzI1NiJ9 .eyJzdWIiOiJhIn0.c2ln",
        "non_ascii": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2l\u00e9",
        "signature_4n1": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnb",
        "header_4n1": "eyJhbGciOiJIUzI1NiJ9a.eyJzdWIiOiJhIn0.c2ln",
        "too_long": "A" * 8193,
    }
    for alg, key in (("RS256", "rs256-private.pem"), ("ES256", "es256-private.pem")):
        token = openssl_signed(alg, key, ALICE)
        if token:
            tokens[alg.lower()] = token
        else:
            print("seeds.py: openssl could not sign %s; seed left out" % alg, file=sys.stderr)
    out = {k: v.encode() for k, v in tokens.items()}
    out["nul_byte"] = GOOD[:20].encode() + b"\0" + GOOD[21:].encode()
    return out


def channel_seeds():
    delivery = json.dumps({"type": "chat.delivery", "room": "lobby", "user": "alice",
                           "text": "hi", "id": "0" * 32}, separators=(",", ":"))
    delivery = (delivery[:-1] + ',"ts":1700000000.123456}').encode()
    cases = {
        "delivery": (b"room:lobby", delivery),
        "backend_object": (b"room:news", b'{"type":"news.flash","headline":"x"}'),
        "room_all_chars": (b"room:Az09_-", b"{}"),
        "room_64": (b"room:" + b"r" * 64, b'{"a":1}'),
        "room_65": (b"room:" + b"r" * 65, b'{"a":1}'),
        "prefix_only": (b"room:", b"{}"),
        "no_prefix": (b"lobby", b"{}"),
        "upper_prefix": (b"ROOM:lobby", b"{}"),
        "space_in_room": (b"room:bad room", b"{}"),
        "slash_in_room": (b"room:a/b", b"{}"),
        "nul_in_channel": (b"room:lob\0by", b"{}"),
        "presence_key": (b"rt:presence:user:alice:lobby", b"1"),
        "keyspace": (b"__keyspace@0__:room:lobby", b"set"),
        "non_ascii_room": (b"room:caf\xc3\xa9", b"{}"),
        "payload_array": (b"room:lobby", b"[1,2]"),
        "payload_string": (b"room:lobby", b'"hello"'),
        "payload_number": (b"room:lobby", b"42"),
        "payload_text": (b"room:lobby", b"hello"),
        "payload_empty": (b"room:lobby", b""),
        "payload_whitespace": (b"room:lobby", b" \n{\"a\":1}\t"),
        "payload_trailing": (b"room:lobby", b'{"a":1} x'),
        "payload_two": (b"room:lobby", b"{}{}"),
        "payload_nul_escape": (b"room:lobby", b'{"text":"a\\u0000b"}'),
        "payload_raw_nul": (b"room:lobby", b'{"text":"a\0b"}'),
        "payload_nul_after": (b"room:lobby", b"{}\0"),
        "payload_invalid_utf8": (b"room:lobby", b'{"text":"\xff"}'),
        "payload_surrogate_bytes": (b"room:lobby", b'{"text":"\xed\xa0\x80"}'),
        "payload_bom": (b"room:lobby", b'\xef\xbb\xbf{}'),
        "payload_deep": (b"room:lobby", b'{"x":' + b"[" * 300 + b"]" * 300 + b"}"),
        "payload_dup_keys": (b"room:lobby", b'{"type":"a","type":"b"}'),
    }
    return {name: bytes([len(ch)]) + ch + payload for name, (ch, payload) in cases.items()}


def frame_guard_seeds():
    sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
    from rtws_harness import ws_frame

    def frame(opcode, payload, fin=True, mask=True):
        # A fixed masking key keeps the seeds the same from run to run.
        return ws_frame(opcode, payload, fin=fin, mask=mask, key=b"\x11\x22\x33\x44")
    ping = frame(1, b'{"type":"system.ping","id":"1"}')
    request = (b"GET /ws/lobby?token=x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    # byte 0: bit 0 = HTTP first, bits 1-4 = reader buffer (0: 4096);
    # bytes 1-4: read sizes
    ws, ws_small, http = b"\x00", b"\x06", b"\x01"
    whole, bytewise, mixed = b"\xff\xff\xff\xff", b"\x01\x01\x01\x01", b"\x03\x01\x07\x02"
    return {
        "masked_frames": ws + whole + ping + frame(9, b"p") + frame(1, b"x" * 200),
        "unmasked_text": ws + whole + ping + frame(1, b"hello", mask=False),
        "unmasked_bytewise": ws + bytewise + ping + frame(1, b"hello", mask=False),
        "unmasked_mixed": ws + mixed + frame(1, b"a" * 130) + frame(8, b"\x03\xe8", mask=False),
        "unmasked_small_buffer": ws_small + mixed + ping + frame(1, b"z", mask=False),
        "one_byte_buffer": b"\x02" + whole + ping + frame(1, b"z", mask=False),
        "long_64bit": ws + mixed + frame(2, b"b" * 70000)[:3000],
        "fragments": ws + mixed + frame(1, b"ab", fin=False) + frame(9, b"") + frame(0, b"cd"),
        "http_masked": http + whole + request + ping,
        "http_unmasked": http + mixed + request + frame(1, b"x", mask=False),
        "http_two_requests": http + mixed + b"GET / HTTP/1.1\r\n\r\n" + request + ping,
    }


def main():
    targets = {
        "codec": codec_seeds(),
        "origin": origin_seeds(),
        "token": token_seeds(),
        "jwt_shape": jwt_seeds(),
        "channel": channel_seeds(),
        "frame_guard": frame_guard_seeds(),
    }
    for target, seeds in targets.items():
        folder = os.path.join(CORPUS, target)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        for name, data in seeds.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        print("%s: %d seeds" % (target, len(seeds)))


if __name__ == "__main__":
    main()
