"""SIGHUP reload: rtwsd reads its config file and environment again and applies
what can change at run time without dropping connections, logs each change,
keeps restart-only values, and refuses an invalid new configuration (the
running one stays)."""

import asyncio
import os
import signal
import tempfile

from rtws_harness import *

A = "http://a.example.com"
B = "http://b.example.com"


def _write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


async def _reload(srv, pattern, what):
    srv.send_signal(signal.SIGHUP)
    ok = await srv.wait_log(pattern, 5.0)
    check(ok, what, f"no log line matching {pattern!r}")


async def test_origins_and_secret_reload():
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "rtwsd.conf")
        _write(conf, f"ALLOWED_ORIGINS={A}\nJWT_SECRET=first-secret\n")
        # The harness sets JWT_SECRET in the environment, which would beat the
        # file: unset it so the file decides.
        with Server({"JWT_SECRET": None}, args=["--config", conf]) as srv:
            old_token = mint("alice", secret="first-secret")
            held = await connect(srv.port, "r1", token=old_token, origin=A)
            await expect_rejected(srv.port, "r1", 403, "before reload, origin B is refused",
                                  token=old_token, origin=B)

            _write(conf, f"ALLOWED_ORIGINS={B}\nJWT_SECRET=second-secret\nLOG_LEVEL=debug\n")
            await _reload(srv, r"reload: \d+ changes? applied", "SIGHUP applies the new file")
            check(await srv.wait_log(r"reload: ALLOWED_ORIGINS=http://b\.example\.com", 1.0),
                  "the reload logs what changed (ALLOWED_ORIGINS with its value)")
            check(await srv.wait_log(r"reload: JWT_SECRET changed", 1.0),
                  "a changed secret is logged without its value")
            check("second-secret" not in srv.log_text(), "the new secret never reaches the log")

            new_token = mint("bob", secret="second-secret")
            await expect_accepted(srv.port, "r1", "after reload, origin B and the new secret work",
                                  token=new_token, origin=B)
            await expect_rejected(srv.port, "r1", 403, "after reload, origin A is refused",
                                  token=new_token, origin=A)
            await expect_rejected(srv.port, "r1", 401, "after reload, the old secret is refused",
                                  token=old_token, origin=B)
            ok, msg = await ping_ack(held, "held", what="connection opened before the reload")
            check(ok, "a reload does not drop existing connections", repr(msg))


async def test_invalid_reload_keeps_running_config():
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "rtwsd.conf")
        _write(conf, f"ALLOWED_ORIGINS={A}\n")
        with Server(args=["--config", conf]) as srv:
            _write(conf, f"ALLOWED_ORIGINS={B}\nIDLE_TIMEOUT=0\n")
            await _reload(srv, r"reload refused.*IDLE_TIMEOUT", "an invalid file is refused and logged")
            await expect_accepted(srv.port, "r1", "after a refused reload origin A still works",
                                  origin=A)
            await expect_rejected(srv.port, "r1", 403,
                                  "after a refused reload nothing of the bad file applies",
                                  origin=B)
            # A key auth cannot use is refused too, as a whole.
            key = os.path.join(RTWS_FIXTURES, "not-a-key.pem")
            _write(conf, f"ALLOWED_ORIGINS={B}\nJWT_ALG=RS256\nJWT_PUBLIC_KEY_FILE={key}\n")
            await _reload(srv, r"reload refused.*JWT settings",
                          "JWT settings auth cannot use refuse the whole reload")
            await expect_accepted(srv.port, "r1", "after a refused JWT reload the old secret and "
                                                  "origins still work", origin=A)


async def test_restart_only_values_kept():
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "rtwsd.conf")
        _write(conf, "IDLE_TIMEOUT=60\n")
        with Server(args=["--config", conf]) as srv:
            held = await connect(srv.port, "r1", token=mint("alice"))
            # PORT from the environment beats the file, so change PRESENCE_TTL.
            _write(conf, "IDLE_TIMEOUT=61\nPRESENCE_TTL=5\n")
            await _reload(srv, r"reload: PRESENCE_TTL changed; it takes effect after a restart",
                          "a restart-only variable is logged as such")
            check(await srv.wait_log(r"reload: IDLE_TIMEOUT=61 \(was 60\)", 1.0),
                  "the reloadable change in the same file is applied")
            ok, msg = await ping_ack(held, "still", what="connection after reload")
            check(ok, "connections survive a reload with restart-only changes", repr(msg))
            srv.send_signal(signal.SIGHUP)
            check(await srv.wait_log(r"reload: nothing to change", 5.0),
                  "a second SIGHUP with the same file changes nothing")


if __name__ == "__main__":
    main([test_origins_and_secret_reload, test_invalid_reload_keeps_running_config,
          test_restart_only_values_kept], per_test_timeout=30, watchdog=110)
