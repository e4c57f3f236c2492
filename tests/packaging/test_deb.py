"""The Debian package (issue 5): "dpkg-buildpackage -us -uc -b" builds rtws
from a copy of the source tree, and the .deb holds both programs, their
manual pages, /etc/rtws/rtwsd.conf as a conffile and the systemd unit,
enabled by its maintainer scripts; lintian reports no error.

Slow (a full build plus lintian: a few minutes). Never recursive: the
package build exports RTWS_IN_DEB_BUILD, and this test skips under it."""

import glob
import shutil

from pkgtest import *

if os.environ.get("RTWS_IN_DEB_BUILD"):
    skip("running inside the package build (debian/rules)")
for tool, package in (("dpkg-buildpackage", "dpkg-dev"), ("dh", "debhelper"),
                      ("dpkg-deb", "dpkg")):
    if not shutil.which(tool):
        skip(f"{tool} is not installed (Debian package {package})")
if not os.path.isfile(os.path.join(SRCDIR, "debian", "control")):
    skip("no debian/ directory in the source tree")

# Build products of an in-tree build, which must not reach the package
# build (a copied config.status or Makefile names this tree's paths).
TOP_LEVEL_JUNK = {"Makefile", "config.status", "config.log", "libtool", "stamp-h1",
                  "build-config.h", "rtwsd", "rtws-token", "test-suite.log", "_build"}
ANYWHERE_JUNK = {".git", ".deps", ".libs", "__pycache__", "autom4te.cache", ".dirstamp",
                 ".debhelper", "debhelper-build-stamp", "files"}
JUNK_SUFFIXES = (".o", ".lo", ".la", ".log", ".trs", ".tar.gz", ".substvars")


def ignore(directory, names):
    rel = os.path.relpath(directory, SRCDIR)
    skipped = set()
    for name in names:
        path = os.path.join(directory, name)
        if name in ANYWHERE_JUNK or name.endswith(JUNK_SUFFIXES) or name.endswith("~"):
            skipped.add(name)
        elif rel == "." and (name in TOP_LEVEL_JUNK or
                             (name.startswith("rtws-") and os.path.isdir(path))):
            skipped.add(name)       # distdirs such as rtws-0.1.0/
        elif rel == "tests" and name.startswith("test_") and "." not in name:
            skipped.add(name)       # test programs
        elif rel == "systemd" and name == "rtwsd.service":
            skipped.add(name)
        elif rel == "debian" and name == "rtws" and os.path.isdir(path):
            skipped.add(name)
    return skipped


def build_env():
    env = clean_env(DEB_BUILD_OPTIONS="nocheck parallel=2", DEB_BUILD_PROFILES="nocheck",
                    LC_ALL="C.UTF-8")
    for name in list(env):     # the outer test run's settings are not the package's
        if name.startswith("RTWS") or name in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE"):
            del env[name]
    return env


with TempDir() as t:
    src = os.path.join(t, "rtws")
    shutil.copytree(SRCDIR, src, ignore=ignore, symlinks=True)
    # Under "make distcheck" the tree is read-only; the copy must not be.
    for root, dirs, files in os.walk(src):
        for n in dirs + files:
            p = os.path.join(root, n)
            if not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | 0o200)

    rc, out = run(["dpkg-checkbuilddeps", "-P", "nocheck"], cwd=src, env=build_env())
    if rc != 0:
        skip("build dependencies missing (scripts/install-deps installs them): "
             + out.strip())

    rc, out = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=build_env(),
                  timeout=1800)
    if not check(rc == 0, "dpkg-buildpackage -us -uc -b builds the package", tail(out, 60)):
        finish()
    debs = glob.glob(os.path.join(t, "rtws_*.deb"))
    if not check(len(debs) == 1, "one binary package rtws_*.deb is built", str(debs)):
        finish()
    deb = debs[0]
    log(f"     built {os.path.basename(deb)}")

    rc, listing = run(["dpkg-deb", "-c", deb])
    paths = {line.split()[-1] if " -> " not in line else line.split(" -> ")[0].split()[-1]
             for line in listing.splitlines() if line.strip()}
    for path, what in (("./usr/bin/rtwsd", "the daemon"),
                       ("./usr/bin/rtws-token", "the token tool"),
                       ("./usr/share/man/man8/rtwsd.8.gz", "rtwsd(8)"),
                       ("./usr/share/man/man1/rtws-token.1.gz", "rtws-token(1)"),
                       ("./etc/rtws/rtwsd.conf", "the configuration file"),
                       ("./lib/systemd/system/rtwsd.service", "the systemd unit"),
                       ("./usr/share/doc/rtws/copyright", "the copyright file")):
        check(path in paths, f"the package ships {what} as {path}", listing)

    rc, conffiles = run(["dpkg-deb", "-I", deb, "conffiles"])
    check("/etc/rtws/rtwsd.conf" in conffiles.split(),
          "/etc/rtws/rtwsd.conf is a conffile (local changes survive upgrades)", conffiles)
    rc, postinst = run(["dpkg-deb", "-I", deb, "postinst"])
    check("deb-systemd-helper" in postinst and "rtwsd.service" in postinst,
          "the postinst enables rtwsd.service (dh_installsystemd)", tail(postinst))
    rc, depends = run(["dpkg-deb", "-f", deb, "Depends"])
    for lib in ("libczmq4", "libwebsockets17", "libjwt0"):
        check(lib in depends, f"the package depends on {lib} (shlibs)", depends)

    x = os.path.join(t, "x")
    rc, out = run(["dpkg-deb", "-x", deb, x])
    unit = os.path.join(x, "lib/systemd/system/rtwsd.service")
    if os.path.isfile(unit):
        with open(unit, encoding="utf-8") as f:
            check("ExecStart=/usr/bin/rtwsd --config /etc/rtws/rtwsd.conf" in f.read(),
                  "the packaged unit starts /usr/bin/rtwsd with /etc/rtws/rtwsd.conf")

    lintian = shutil.which("lintian")
    if not lintian:
        log("note: lintian is not installed; the package is not linted")
    else:
        changes = glob.glob(os.path.join(t, "rtws_*.changes"))
        rc, out = run([lintian, "--no-tag-display-limit"] + (changes or [deb]),
                      env=build_env(), timeout=900)
        log("     lintian: " + (out.strip().replace("\n", "\n              ") or "clean"))
        errors = [l for l in out.splitlines() if l.startswith("E: ")]
        check(not errors, "lintian reports no error", "\n".join(errors))
finish()
