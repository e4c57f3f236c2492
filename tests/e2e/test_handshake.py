"""Handshake: GET /ws/{room} is checked room -> Origin -> token before any 101
(docs/PROTOCOL.md section 2). Every rejection is checked twice: with raw bytes
(the exact `HTTP/1.1 <code>` status line, no upgrade) and with
python-websockets (InvalidStatusCode.status_code)."""

import re
import time

from rtws_harness import *

ORIGINS = "https://app.example.com,http://localhost:3000"
GOOD_ORIGIN = "https://app.example.com"
AUDIENCE = "rtws-test"
ISSUER = "https://issuer.example"


def _parts(room, token, via, origin, extra):
    path = f"/ws/{room}"
    headers = list(extra)
    if token is not None:
        if via == "query":
            path += "?token=" + token
        elif via == "cookie":
            headers.append(("Cookie", "access_token=" + token))
        else:
            headers.append(("Authorization", "Bearer " + token))
    if origin is not None:
        headers.append(("Origin", origin))
    return path, headers


async def raw_status(port, path, headers=(), upgrade=True, timeout=3.0):
    conn = await RawConn.open(port)
    try:
        if upgrade:
            req, _ = ws_upgrade_request(port, path, headers)
        else:
            req = http_request(port, path, headers)
        await conn.send(req)
        status, _ = await conn.read_http_head(timeout)
        return status
    finally:
        conn.close()


async def both(port, room, code, what, token="valid", via="query", origin=None,
               extra=()):
    """Checks one request with raw bytes and with python-websockets.
    code 101 means: accepted (and the connection answers a ping)."""
    if token == "valid":
        token = mint("alice")
    path, headers = _parts(room, token, via, origin, extra)
    try:
        status = await raw_status(port, path, headers)
    except Failure as e:
        status = f"<{e}>"
    check(bool(status) and re.match(rf"^HTTP/1\.1 {code}( |$)", status),
          f"{what} (raw: status line HTTP/1.1 {code})", f"status line {status!r}")
    # python-websockets: same request, query included in the room path.
    room_path = path[len("/ws/"):]
    kw = {"token": None, "origin": origin, "extra_headers": headers_without_origin(headers)}
    if code == 101:
        await expect_accepted(port, room_path, f"{what} (websockets client)", **kw)
    else:
        await expect_rejected(port, room_path, code, f"{what} (websockets: HTTP {code})", **kw)


def headers_without_origin(headers):
    return [(k, v) for k, v in headers if k != "Origin"]


# --------------------------------------------------------------------------

async def test_room_names():
    with Server() as srv:
        p = srv.port
        await both(p, "a" * 65, 400, "a 65-character room is a bad room")
        await both(p, "a.b", 400, "a room with '.' is a bad room")
        await both(p, "a%20b", 400, "a room with an (url-encoded) space is a bad room")
        await both(p, "", 400, "an empty room (/ws/) is a bad room")
        await both(p, "a" * 64, 101, "a 64-character room is accepted")
        await both(p, "Az09_-", 101, "letters, digits, '_' and '-' make a valid room")


async def test_origin_policy():
    with Server({"ALLOWED_ORIGINS": ORIGINS}) as srv:
        p = srv.port
        await both(p, "r1", 403, "a missing Origin fails when ALLOWED_ORIGINS is set",
                   origin=None)
        await both(p, "r1", 403, "Origin 'null' fails", origin="null")
        await both(p, "r1", 403, "an Origin not in the list fails",
                   origin="https://evil.example.com")
        await both(p, "r1", 403, "the scheme is part of the origin (http vs https)",
                   origin="http://app.example.com")
        await both(p, "r1", 403, "an allowed host as a prefix of another host fails",
                   origin="https://app.example.com.evil.com")
        await both(p, "r1", 403, "a non-default port is part of the origin",
                   origin="https://app.example.com:8443")
        await both(p, "r1", 403, "another port of an allowed host fails",
                   origin="http://localhost:3001")
        await both(p, "r1", 101, "an allowed Origin is accepted", origin=GOOD_ORIGIN)
        await both(p, "r1", 101,
                   "Origin is normalised: scheme/host lower-cased, default port 443 dropped",
                   origin="HTTPS://APP.EXAMPLE.COM:443")
        await both(p, "r1", 101, "an allowed origin with an explicit port is accepted",
                   origin="http://localhost:3000")
        await both(p, "r1", 101, "host case does not matter for a port-bearing origin",
                   origin="HTTP://LocalHost:3000")


async def test_check_order():
    with Server({"ALLOWED_ORIGINS": ORIGINS}) as srv:
        p = srv.port
        await both(p, "a.b", 400, "the room is checked before the Origin (bad room + bad origin)",
                   origin="https://evil.example.com")
        await both(p, "r1", 403, "the Origin is checked before the token (bad origin + no token)",
                   origin="https://evil.example.com", token=None)
        await both(p, "a" * 65, 400, "the room is checked before the token (bad room + no token)",
                   origin=GOOD_ORIGIN, token=None)
        await both(p, "r1", 401, "good room and origin, no token: unauthorized",
                   origin=GOOD_ORIGIN, token=None)


async def test_token_rejections():
    with Server() as srv:
        p = srv.port
        now = int(time.time())
        await both(p, "r1", 401, "a missing token is unauthorized", token=None)
        await both(p, "r1", 401, "a token signed with another secret is refused",
                   token=mint("alice", secret="wrong-secret"))
        await both(p, "r1", 401, "an alg 'none' token is refused", token=mint_none("alice"))
        await both(p, "r1", 401, "an expired token is refused", token=mint("alice", exp_in=-30))
        await both(p, "r1", 401, "exp is enforced without leeway (expired 2 s ago)",
                   token=mint("alice", exp_in=-2))
        await both(p, "r1", 401, "a token whose nbf is in the future is refused",
                   token=mint("alice", nbf=now + 60))
        await both(p, "r1", 401, "a token with another HMAC alg (HS384) than JWT_ALG is refused",
                   token=mint("alice", alg="HS384"))
        await both(p, "r1", 401, "a token whose payload was changed after signing is refused",
                   token=tamper_payload(mint("alice"), sub="mallory"))
        await both(p, "r1", 401, "a token with a corrupted signature is refused",
                   token=tamper_signature(mint("alice")))
        await both(p, "r1", 401, "a token that is not a JWT is refused", token="abc")
        await both(p, "r1", 401, "an empty ?token= is unauthorized", token="")
        await both(p, "r1", 401, "an Authorization header that is not Bearer is no token",
                   token=None, extra=[("Authorization", "Basic YWxpY2U6cHc=")])


async def test_token_sources():
    with Server() as srv:
        p = srv.port
        await both(p, "r1", 101, "a valid token in ?token= is accepted", via="query")
        await both(p, "r1", 101, "a valid token in the access_token cookie is accepted",
                   via="cookie")
        await both(p, "r1", 101, "a valid token in Authorization: Bearer is accepted",
                   via="header")
        await both(p, "r1", 101, "access_token is found among other cookies", token=None,
                   extra=[("Cookie", "theme=dark; access_token=" + mint("alice") + "; lang=en")])
        await both(p, "r1", 101, "a token without exp is accepted (exp enforced when present)",
                   token=mint("alice", exp_in=None))
        await both(p, "r1", 101, "a token whose nbf has passed is accepted",
                   token=mint("alice", nbf=int(time.time()) - 60))


async def test_token_precedence():
    good, bad = mint("alice"), mint("alice", secret="wrong-secret")
    with Server() as srv:
        p = srv.port
        await both(p, "r1", 101, "the query token wins over an invalid cookie",
                   token=good, via="query", extra=[("Cookie", "access_token=" + bad)])
        await both(p, "r1", 401,
                   "an invalid query token is used even when the cookie is valid (first present)",
                   token=bad, via="query", extra=[("Cookie", "access_token=" + good)])
        await both(p, "r1", 101, "the cookie wins over an invalid Bearer header",
                   token=good, via="cookie", extra=[("Authorization", "Bearer " + bad)])
        await both(p, "r1", 401,
                   "an invalid cookie is used even when the Bearer header is valid",
                   token=bad, via="cookie", extra=[("Authorization", "Bearer " + good)])
        await both(p, "r1", 401,
                   "an invalid query token is used even when the Bearer header is valid",
                   token=bad, via="query", extra=[("Authorization", "Bearer " + good)])


async def test_audience_issuer():
    with Server({"JWT_AUDIENCE": AUDIENCE, "JWT_ISSUER": ISSUER}) as srv:
        p = srv.port
        await both(p, "r1", 101, "a token with the configured aud and iss is accepted",
                   token=mint("alice", aud=AUDIENCE, iss=ISSUER))
        await both(p, "r1", 401, "a wrong aud is refused when JWT_AUDIENCE is set",
                   token=mint("alice", aud="someone-else", iss=ISSUER))
        await both(p, "r1", 401, "a wrong iss is refused when JWT_ISSUER is set",
                   token=mint("alice", aud=AUDIENCE, iss="https://evil.example"))
        await both(p, "r1", 401, "a missing aud is refused when JWT_AUDIENCE is set",
                   token=mint("alice", iss=ISSUER))
        await both(p, "r1", 401, "a missing iss is refused when JWT_ISSUER is set",
                   token=mint("alice", aud=AUDIENCE))


async def test_plain_http_is_answered():
    with Server() as srv:
        for path in ("/unknown", "/ws/r1"):
            try:
                status = await raw_status(srv.port, path, upgrade=False, timeout=2.0)
            except Failure as e:
                status = f"<{e}>"
            check(bool(status) and re.match(r"^HTTP/1\.[01] [1-5]\d\d", status)
                  and not status.startswith("HTTP/1.1 101"),
                  f"a plain GET {path} (no upgrade) gets an HTTP response within 2 s",
                  f"status line {status!r}")
        ws = await connect(srv.port, "r1")
        try:
            ok, msg = await ping_ack(ws, "after-http", what="server still serves after plain HTTP")
            check(ok, "server still serves WebSocket after plain HTTP requests", repr(msg))
        finally:
            await ws.close()


if __name__ == "__main__":
    main([test_room_names, test_origin_policy, test_check_order, test_token_rejections,
          test_token_sources, test_token_precedence, test_audience_issuer,
          test_plain_http_is_answered], per_test_timeout=40, watchdog=58)
