"""rtws-token: the command-line token minter, checked against an independent
HMAC verification and against the real rtwsd."""

import hmac
import re
import time

from rtws_harness import *


def _mint_cli(args, secret=SECRET, **env):
    env["JWT_SECRET"] = secret
    return run_once(env, args, timeout=10, binary=RTWS_TOKEN)


async def test_mints_verifiable_token():
    secret = "cli-secret-123"
    t0 = int(time.time())
    rc, out, err = _mint_cli(["--sub", "alice", "--exp", "60"], secret)
    require(rc == 0, "rtws-token --sub alice --exp 60 exits 0", f"exit {rc}, stderr {err!r}")
    lines = [l for l in out.splitlines() if l.strip()]
    require(len(lines) == 1, "rtws-token prints exactly the token on stdout (one line)",
            f"stdout was {out!r}")
    token = lines[0].strip()
    require(token.count(".") == 2, "the token is a compact JWS (header.payload.signature)",
            repr(token))
    header, payload, signing_input, sig = decode_jwt(token)
    check_eq(header.get("alg"), "HS256", "rtws-token signs with the default JWT_ALG HS256")
    good = hmac.compare_digest(
        sig, hmac.new(secret.encode(), signing_input.encode(), "sha256").digest())
    check(good, "rtws-token signs with JWT_SECRET from the environment (HMAC-SHA256 verifies)")
    wrong = hmac.compare_digest(
        sig, hmac.new(b"other", signing_input.encode(), "sha256").digest())
    check(not wrong, "signature depends on the secret")
    check_eq(payload.get("sub"), "alice", "--sub sets the sub claim")
    exp = payload.get("exp")
    t1 = int(time.time())
    check(isinstance(exp, int) and t0 + 60 - 2 <= exp <= t1 + 60 + 2,
          "--exp 60 sets exp to now + 60 s (integer NumericDate)", f"exp={exp!r}, now={t1}")


async def test_token_accepted_by_rtwsd():
    rc, out, err = _mint_cli(["--sub", "alice", "--exp", "60"], SECRET)
    require(rc == 0, "rtws-token mints", f"exit {rc}, stderr {err!r}")
    token = out.strip()
    with Server() as srv:
        ws = await connect(srv.port, "cli", token=token)
        try:
            ok, msg = await ping_ack(ws, "cli-1", what="a connection with an rtws-token token")
            check(ok, "rtwsd accepts a token made by rtws-token with the same JWT_SECRET",
                  repr(msg))
            await ws.send('{"type":"chat.message","text":"hi","id":"c1"}')
            d = await recv_json(ws, what="own chat.delivery")
            check_eq(d.get("user"), "alice", "the user id of an rtws-token token is its --sub")
        finally:
            await ws.close()
        await expect_rejected(srv.port, "cli", 401,
                              "a token minted with another secret is refused",
                              token=_mint_cli(["--sub", "alice", "--exp", "60"],
                                              "not-the-server-secret")[1].strip())


async def test_follows_jwt_alg():
    rc, out, err = _mint_cli(["--sub", "bob"], "s3", JWT_ALG="HS512")
    require(rc == 0, "rtws-token mints with JWT_ALG=HS512", f"exit {rc}, stderr {err!r}")
    header, payload, signing_input, sig = decode_jwt(out.strip())
    check_eq(header.get("alg"), "HS512", "rtws-token uses JWT_ALG from the environment")
    check(hmac.compare_digest(sig, hmac.new(b"s3", signing_input.encode(), "sha512").digest()),
          "an HS512 token from rtws-token verifies with HMAC-SHA512 and JWT_SECRET")
    with Server({"JWT_ALG": "HS512", "JWT_SECRET": "s3"}) as srv:
        await expect_accepted(srv.port, "cli", "rtwsd with JWT_ALG=HS512 accepts rtws-token's "
                                               "token minted in the same environment",
                              token=out.strip())


async def test_help_exits_zero():
    rc, out, err = _mint_cli(["--help"])
    check_eq(rc, 0, "rtws-token --help exits 0")
    check(("--sub" in out + err) and ("--exp" in out + err),
          "rtws-token --help documents --sub and --exp", f"stdout {out!r} stderr {err!r}")


async def test_bad_args_exit_two():
    for args in ([], ["--bogus"], ["--exp", "abc", "--sub", "alice"], ["--sub"],
                 ["--sub", "alice", "--exp"]):
        rc, out, err = _mint_cli(args)
        check_eq(rc, 2, f"rtws-token {' '.join(args)} is a usage error (exit 2)")
        check(err.strip() != "", f"rtws-token {' '.join(args)} explains the error on stderr")
        check(not re.search(r"[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}", out),
              f"rtws-token {' '.join(args)} prints no token", repr(out))


if __name__ == "__main__":
    main([test_mints_verifiable_token, test_token_accepted_by_rtwsd,
          test_follows_jwt_alg, test_help_exits_zero, test_bad_args_exit_two],
         per_test_timeout=30, watchdog=55)
