"""Configuration sources and the command line (issue: ship it like a distro
service): a NAME=value config file, precedence options > environment > file >
defaults, --check-config with secrets masked, --help/--version, LOG_FORMAT."""

import json
import os
import tempfile

from rtws_harness import *


def _effective(out):
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _write(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


async def test_precedence():
    with tempfile.TemporaryDirectory() as tmp:
        conf = _write(tmp, "rtwsd.conf",
                      "# comment line\n"
                      "\n"
                      "PORT=7001\n"
                      "IDLE_TIMEOUT=30\n"
                      "export HEARTBEAT_INTERVAL=11\n"
                      "PRESENCE_TTL = \"45\"\n"
                      "LOG_LEVEL='warn'\n")
        rc, out, err = run_once({"IDLE_TIMEOUT": "40", "PORT": "7002"},
                                ["--config", conf, "--port", "7003", "--check-config"])
        check_eq(rc, 0, "--check-config exits 0 for a valid configuration")
        eff = _effective(out)
        check_eq(eff.get("PORT"), "7003", "a command-line option beats the environment and the file")
        check_eq(eff.get("IDLE_TIMEOUT"), "40", "the environment beats the config file")
        check_eq(eff.get("HEARTBEAT_INTERVAL"), "11", "the config file beats the default "
                                                      "(an 'export ' prefix is allowed)")
        check_eq(eff.get("PRESENCE_TTL"), "45", "blanks around '=' and double quotes are allowed")
        check_eq(eff.get("LOG_LEVEL"), "warn", "single quotes are allowed")
        check_eq(eff.get("MAX_MESSAGE_SIZE"), "65536", "unset variables keep their defaults")


async def test_check_config_masks_secrets():
    env = {"JWT_SECRET": "s3cret-value", "REDIS_URL": "redis://:hunter2@127.0.0.1:6379/1"}
    rc, out, err = run_once(env, ["--check-config"])
    check_eq(rc, 0, "--check-config exits 0")
    check("s3cret-value" not in out + err, "--check-config never prints JWT_SECRET", out)
    check("hunter2" not in out + err, "--check-config never prints the Redis password", out)
    eff = _effective(out)
    check_eq(eff.get("JWT_SECRET"), "***", "JWT_SECRET shows as ***")
    check_eq(eff.get("REDIS_URL"), "redis://***@127.0.0.1:6379/1",
             "REDIS_URL shows with its password masked")
    names = {"HOST", "PORT", "JWT_SECRET", "JWT_ALG", "JWT_PUBLIC_KEY_FILE", "JWT_AUDIENCE",
             "JWT_ISSUER", "REDIS_URL", "ALLOWED_ORIGINS", "PRESENCE_TTL",
             "HEARTBEAT_INTERVAL", "IDLE_TIMEOUT", "MAX_MESSAGE_SIZE"}
    check(names <= set(eff), "--check-config prints every variable of PROTOCOL.md section 1",
          f"missing {sorted(names - set(eff))}")


async def test_bad_files():
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("IDLE_TIMEOUT=0\n", ["rtwsd.conf:1", "IDLE_TIMEOUT"], "an invalid value"),
            ("# ok\nIDEL_TIMEOUT=5\n", ["rtwsd.conf:2", "IDEL_TIMEOUT"], "a misspelt name"),
            ("PORT 8000\n", ["rtwsd.conf:1", "NAME=value"], "a line without '='"),
        ]
        for text, words, what in cases:
            conf = _write(tmp, "rtwsd.conf", text)
            for args in (["--config", conf, "--check-config"], ["--config", conf]):
                rc, out, err = run_once({}, args)
                check_eq(rc, 2, f"{what} in the config file exits 2 ({' '.join(args[2:]) or 'start'})")
                lines = [l for l in (out + err).splitlines() if l.strip()]
                check(len(lines) == 1 and all(w in lines[0] for w in words),
                      f"{what}: one line naming file, line and variable", repr(lines))
        rc, out, err = run_once({}, ["--config", os.path.join(tmp, "missing.conf")])
        check_eq(rc, 2, "a missing config file exits 2")
        check("missing.conf" in err, "the error names the missing file", err)


async def test_help_and_version():
    rc, out, _ = run_once({}, ["--help"])
    check_eq(rc, 0, "--help exits 0")
    check("--config" in out and "--check-config" in out and "SIGHUP" in out,
          "--help documents the options and signals", out[:200])
    rc, out, _ = run_once({}, ["--version"])
    check_eq(rc, 0, "--version exits 0")
    check(out.startswith("rtwsd "), "--version prints 'rtwsd <version>'", out)
    rc, _, err = run_once({}, ["--bogus"])
    check_eq(rc, 2, "an unknown option exits 2")


async def test_log_format_json():
    with Server({"LOG_FORMAT": "json", "LOG_LEVEL": "info"}) as srv:
        ws = await connect(srv.port, "r1", token=mint("alice"))
        await ws.close()
        await srv.wait_log("close conn=", 5.0)
    lines = [l for l in srv.log_text().splitlines() if l.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            check(False, "with LOG_FORMAT=json every log line is a JSON object", repr(line))
    check(any(p.get("component") == "gateway" and "open conn=" in p.get("msg", "")
              for p in parsed), "JSON log lines carry component and msg (connection open)")
    check(all({"ts", "level", "component", "msg"} <= set(p) for p in parsed),
          "every JSON log line has ts, level, component and msg")


if __name__ == "__main__":
    main([test_precedence, test_check_config_masks_secrets, test_bad_files,
          test_help_and_version, test_log_format_json], per_test_timeout=30, watchdog=110)
