"""The systemd unit (issue 5): "systemd-analyze verify" accepts it with the
programs and manual pages in place and no warning, its sandbox scores an
exposure of 2.0 or lower in "systemd-analyze security", and it keeps the
settings the daemon relies on (Type=notify, reload by SIGHUP, the limits).

The unit is installed into a temporary prefix (not with DESTDIR), so that the
paths it names exist when systemd-analyze checks them."""

import re
import shutil

from pkgtest import *

MAX_EXPOSURE = 2.0

if not UNITDIR:
    skip("configured with --with-systemdsystemunitdir=no")
analyze = shutil.which("systemd-analyze")
if not analyze:
    skip("systemd-analyze is not installed (Debian package systemd)")

with TempDir() as t:
    unitdir = f"{t}/lib/systemd/system"
    rc, out = make_in_build_tree("install", f"prefix={t}/usr", f"sysconfdir={t}/etc",
                                 f"systemdsystemunitdir={unitdir}")
    if not check(rc == 0, "make install into a temporary prefix succeeds", tail(out)):
        finish()
    unit = f"{unitdir}/rtwsd.service"
    if not check(os.path.isfile(unit), "the unit is installed in systemdsystemunitdir"):
        finish()

    # systemd-analyze runs "man rtwsd(8)" for Documentation=: find ours.
    env = clean_env(MANPATH=f"{t}/usr/share/man", SYSTEMD_LOG_COLOR="0")
    rc, out = run([analyze, "verify", unit], env=env, cwd=t, timeout=120)
    check(rc == 0 and not out.strip(),
          "systemd-analyze verify accepts the installed unit without a warning",
          f"status {rc}:\n{tail(out)}")

    rc, out = run([analyze, "security", "--offline=true", unit],
                  env=env, cwd=t, timeout=120)
    m = re.search(r"Overall exposure level for rtwsd\.service:\s*([0-9.]+)", out)
    check(m is not None, "systemd-analyze security reports an overall exposure level",
          tail(out))
    if m:
        level = float(m.group(1))
        log(f"     exposure level {level}")
        check(level <= MAX_EXPOSURE,
              f"the unit's sandbox scores an exposure of at most {MAX_EXPOSURE}",
              f"{level}; not covered:\n" + "\n".join(
                  l for l in out.splitlines() if l.startswith("\u2717")))

    with open(unit, encoding="utf-8") as f:
        lines = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    for line, why in (
            ("Type=notify", "systemd waits for READY=1 from rtwsd"),
            ("ExecReload=/bin/kill -HUP $MAINPID", "reload is SIGHUP"),
            ("Restart=on-failure", "a crash is restarted"),
            ("RestartPreventExitStatus=2", "an invalid configuration is not restarted in a loop"),
            ("LimitNOFILE=1048576", "descriptors for a million connections"),
            ("DynamicUser=yes", "the daemon never runs as root"),
            ("CapabilityBoundingSet=", "the daemon holds no capability"),
            ("RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
             "IP, the notify/Redis unix sockets, and netlink for getifaddrs()"),
            ("WantedBy=multi-user.target", "the unit can be enabled at boot")):
        check(line in lines, f"the unit has {line} ({why})")
finish()
