"""Configuration: an invalid value stops start-up with exit status 2 and one
clear line naming the variable and the value (docs/PROTOCOL.md section 1);
risky defaults are warned about at start-up."""

import asyncio
import os

from rtws_harness import *

# (environment of the case, words the single error line must contain)
BAD = [
    ({"PORT": "abc"}, ["PORT", "abc"]),
    ({"PORT": "0"}, ["PORT", "0"]),
    ({"PORT": "65536"}, ["PORT", "65536"]),
    ({"PORT": "80abc"}, ["PORT", "80abc"]),          # no atoi-style partial parse
    ({"PORT": ""}, ["PORT"]),                        # empty is not "use the default"
    ({"HEARTBEAT_INTERVAL": "0"}, ["HEARTBEAT_INTERVAL", "0"]),
    ({"HEARTBEAT_INTERVAL": "5s"}, ["HEARTBEAT_INTERVAL", "5s"]),
    ({"IDLE_TIMEOUT": "-5"}, ["IDLE_TIMEOUT", "-5"]),
    ({"IDLE_TIMEOUT": "0"}, ["IDLE_TIMEOUT", "0"]),
    ({"PRESENCE_TTL": "x"}, ["PRESENCE_TTL", "x"]),
    ({"PRESENCE_TTL": "0"}, ["PRESENCE_TTL", "0"]),
    ({"MAX_MESSAGE_SIZE": "abc"}, ["MAX_MESSAGE_SIZE", "abc"]),
    ({"MAX_MESSAGE_SIZE": "0"}, ["MAX_MESSAGE_SIZE", "0"]),
    ({"JWT_ALG": "none"}, ["JWT_ALG", "none"]),
    ({"JWT_ALG": "HS999"}, ["JWT_ALG", "HS999"]),
    ({"JWT_ALG": "RS256", "JWT_PUBLIC_KEY_FILE": None}, ["JWT_PUBLIC_KEY_FILE"]),
    ({"JWT_ALG": "RS256", "JWT_PUBLIC_KEY_FILE": "/nonexistent"},
     ["JWT_PUBLIC_KEY_FILE", "/nonexistent"]),
    ({"ALLOWED_ORIGINS": "not-an-origin"}, ["ALLOWED_ORIGINS", "not-an-origin"]),
    ({"ALLOWED_ORIGINS": "https://ok.example.com,garbage"}, ["ALLOWED_ORIGINS", "garbage"]),
    ({"ALLOWED_ORIGINS": "https://a.example.com/path"},
     ["ALLOWED_ORIGINS", "https://a.example.com/path"]),
    ({"REDIS_URL": "http://x"}, ["REDIS_URL", "http://x"]),
    ({"REDIS_URL": "unix://relative/path"}, ["REDIS_URL", "unix://relative/path"]),
    ({"REDIS_URL": "redis://:@host"}, ["REDIS_URL", "@host"]),   # empty password
    # Files that exist but hold no usable key: refused by the auth actor.
    ({"JWT_ALG": "RS256", "JWT_PUBLIC_KEY_FILE": os.path.join(RTWS_FIXTURES, "not-a-key.pem")},
     ["JWT_PUBLIC_KEY_FILE"]),
    ({"JWT_ALG": "ES256", "JWT_PUBLIC_KEY_FILE": os.path.join(RTWS_FIXTURES, "rs256-public.pem")},
     ["JWT_ALG", "ES256"]),
]


def _base_env():
    # A valid configuration with no start-up warnings, so the error line is
    # the only thing a correct rtwsd prints.
    return {"HOST": "127.0.0.1", "PORT": str(free_port()), "JWT_SECRET": SECRET,
            "ALLOWED_ORIGINS": "http://localhost:3000", "LOG_LEVEL": None}


def _describe(env):
    return " ".join(f"{k}={'<unset>' if v is None else repr(v)}" for k, v in env.items())


async def test_invalid_values_exit_2_with_one_line():
    envs = []
    for case, _ in BAD:
        env = _base_env()
        env.update(case)
        envs.append(env)
    # All cases at once: a wrongly accepted value costs its whole timeout.
    results = await asyncio.gather(*(asyncio.to_thread(run_once, env, (), 5)
                                     for env in envs))
    for (case, words), (rc, out, err) in zip(BAD, results):
        name = _describe(case)
        if not check(rc is not None, f"{name}: start-up stops (rtwsd must not run with it)",
                     "still running after 5 s; killed"):
            continue
        check_eq(rc, 2, f"{name}: exit status 2 for an invalid configuration")
        lines = [l for l in (err + out).splitlines() if l.strip()]
        check(len(lines) == 1, f"{name}: exactly one line explains the error",
              f"output was {lines!r}")
        hit = [l for l in lines if all(w in l for w in words)]
        check(bool(hit), f"{name}: the error line names {' and '.join(map(repr, words))}",
              f"output was {lines!r}")


async def test_valid_edge_values_start():
    # The validation must not be so strict that legitimate values fail.
    env = {"PORT": None, "HEARTBEAT_INTERVAL": "1", "IDLE_TIMEOUT": "1",
           "PRESENCE_TTL": "1", "MAX_MESSAGE_SIZE": "1",
           "ALLOWED_ORIGINS": "https://a.example.com,http://localhost:3000",
           "JWT_ALG": "HS512"}
    with Server(env) as srv:
        check(srv.alive(), "rtwsd starts with the smallest valid values and an origin list")


DEFAULT_SECRET_WARNING = r"(?=.*warn)(?=.*JWT_SECRET)"
ANY_ORIGIN_WARNING = r"(?=.*warn)(?=.*(ALLOWED_ORIGINS|origin))"


async def _fully_started(srv, secret, origin=None):
    # A handshake + ping round trip proves start-up (and its warnings) is over.
    ws = await connect(srv.port, "cfg", token=mint("alice", secret=secret), origin=origin)
    try:
        ok, msg = await ping_ack(ws, "cfg-1", what="server answers after start-up")
        require(ok, "server answers after start-up", repr(msg))
    finally:
        await ws.close()


async def test_default_secret_warns():
    with Server({"JWT_SECRET": None}) as srv:
        line = await srv.wait_log(DEFAULT_SECRET_WARNING, timeout=5)
        check(line is not None,
              "a warning naming JWT_SECRET is logged while the default secret is in use")
        await _fully_started(srv, "change-me")
    with Server({"JWT_SECRET": SECRET, "ALLOWED_ORIGINS": "http://localhost:3000"}) as srv:
        await _fully_started(srv, SECRET, origin="http://localhost:3000")
        line = await srv.wait_log(DEFAULT_SECRET_WARNING, timeout=0)
        check(line is None, "no default-secret warning when JWT_SECRET is set", repr(line))


async def test_empty_allowed_origins_warns():
    for value in ("", None):
        what = "empty" if value == "" else "unset"
        with Server({"ALLOWED_ORIGINS": value}) as srv:
            line = await srv.wait_log(ANY_ORIGIN_WARNING, timeout=5)
            check(line is not None,
                  f"a warning is logged at start-up when ALLOWED_ORIGINS is {what} "
                  f"(any Origin accepted)")
            await _fully_started(srv, SECRET)
    with Server({"ALLOWED_ORIGINS": "http://localhost:3000"}) as srv:
        await _fully_started(srv, SECRET, origin="http://localhost:3000")
        line = await srv.wait_log(ANY_ORIGIN_WARNING, timeout=0)
        check(line is None, "no any-Origin warning when ALLOWED_ORIGINS is set", repr(line))


if __name__ == "__main__":
    main([test_invalid_values_exit_2_with_one_line, test_valid_edge_values_start,
          test_default_secret_warns, test_empty_allowed_origins_warns],
         per_test_timeout=45, watchdog=58)
