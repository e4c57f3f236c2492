"""make install honours DESTDIR, prefix and sysconfdir (issue 5): the two
programs, both manual pages, the commented default configuration and the
systemd unit with the installation's paths; make uninstall removes them."""

from pkgtest import *


def installs_at(prefix, sysconfdir):
    with TempDir() as dest:
        rc, out = staged_install(dest, prefix, sysconfdir)
        if not check(rc == 0, f"make install DESTDIR=... prefix={prefix} succeeds",
                     tail(out)):
            return
        files = staged_files(dest)
        for prog in ("rtwsd", "rtws-token"):
            path = dest + f"{prefix}/bin/{prog}"
            check(os.path.isfile(path) and os.access(path, os.X_OK),
                  f"{prog} is installed executable in {prefix}/bin", "\n".join(files))
        check(f"{prefix}/share/man/man8/rtwsd.8" in files,
              "rtwsd(8) is installed in share/man/man8", "\n".join(files))
        check(f"{prefix}/share/man/man1/rtws-token.1" in files,
              "rtws-token(1) is installed in share/man/man1", "\n".join(files))
        conf = f"{sysconfdir}/rtws/rtwsd.conf"
        check(conf in files, f"the default configuration is installed as {conf}",
              "\n".join(files))
        if conf in files:
            with open(dest + conf, encoding="utf-8") as f:
                live = [l for l in f if l.strip() and not l.startswith("#")]
            check(not live, "every setting of the installed rtwsd.conf is commented out "
                  "(the defaults apply)", "".join(live))

        units = find_unit(dest)
        if UNITDIR:
            check(len(units) == 1, "the systemd unit is installed once, in a "
                  "systemd/system directory", "\n".join(files))
            if units:
                with open(dest + units[0], encoding="utf-8") as f:
                    unit = f.read()
                want = f"ExecStart={prefix}/bin/rtwsd --config {sysconfdir}/rtws/rtwsd.conf"
                check(want in unit.splitlines(),
                      "the unit starts the installed rtwsd with the installed configuration",
                      f"no line {want!r}")
                check("@" not in unit.replace("@system-service", "")
                      .replace("@privileged", "").replace("@resources", ""),
                      "no @placeholder@ is left in the installed unit")
        else:
            check(not units, "no unit is installed with --with-systemdsystemunitdir=no")

        rc, out = staged_install(dest, prefix, sysconfdir, target="uninstall")
        check(rc == 0, "make uninstall with the same DESTDIR succeeds", tail(out))
        check(staged_files(dest) == [], "make uninstall removes every installed file",
              "\n".join(staged_files(dest)))


installs_at("/usr", "/etc")
installs_at("/opt/rtws", "/opt/rtws/etc")
finish()
