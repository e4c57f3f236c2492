"""The settings are documented alike everywhere (issue 5): etc/rtwsd.conf and
.env.example list the same variables, each once, commented out with a
one-line comment above it; both list every variable rtwsd reads (the list of
docs/PROTOCOL.md section 1 plus the extras, and every name "rtwsd --help"
prints); rtwsd(8) documents each of them, the options, the signals and the
exit statuses; rtws-token(1) documents its options."""

import re

from pkgtest import *

CONF = os.path.join(SRCDIR, "etc", "rtwsd.conf")
ENV_EXAMPLE = os.path.join(SRCDIR, ".env.example")
RTWSD_MAN = os.path.join(SRCDIR, "man", "rtwsd.8")
TOKEN_MAN = os.path.join(SRCDIR, "man", "rtws-token.1")


def help_variables():
    """The variable names "rtwsd --help" lists, or None when it cannot run."""
    rtwsd = os.environ.get("RTWSD") or os.path.join(BUILDDIR, "rtwsd")
    if not os.access(rtwsd, os.X_OK):
        return None
    rc, out = run([rtwsd, "--help"], timeout=30)
    if rc != 0:
        return None
    m = re.search(r"environment[^\n]*\n((?:[ \t]+\S[^\n]*\n)+)", out)
    if not m:
        return None
    names = set()
    for line in m.group(1).splitlines():
        if re.fullmatch(r"\s*(?:[A-Z][A-Z0-9_]+\s*)+", line):     # a list of names
            names |= set(line.split())
        else:                                                   # "  NAME  meaning"
            first = re.match(r"\s*([A-Z][A-Z0-9_]{2,})\s", line)
            if first:
                names.add(first.group(1))
    return names


def settings_file(path, label):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    names = settings_file_names(path)
    check(len(names) == len(set(names)), f"{label} lists each variable once",
          str(sorted(n for n in names if names.count(n) > 1)))
    check(set(names) == set(VARIABLES), f"{label} lists exactly the variables rtwsd reads",
          f"missing {sorted(set(VARIABLES) - set(names))}, "
          f"unknown {sorted(set(names) - set(VARIABLES))}")
    for i, line in enumerate(lines):
        m = re.match(r"^(#?)([A-Z][A-Z0-9_]*)=", line)
        if not m:
            continue
        name = m.group(2)
        check(m.group(1) == "#", f"{label}: {name} is commented out (its default applies)")
        above = lines[i - 1] if i > 0 else ""
        check(above.startswith("# ") and (i < 2 or not lines[i - 2].startswith("#")),
              f"{label}: {name} has a one-line comment above it", repr(above))
    return names


conf_names = settings_file(CONF, "etc/rtwsd.conf")
env_names = settings_file(ENV_EXAMPLE, ".env.example")
check(conf_names == env_names, ".env.example lists the variables in the order of rtwsd.conf")


def defaults(path):
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^#([A-Z][A-Z0-9_]*)=(.*)$", line.rstrip("\n"))
            if m:
                out[m.group(1)] = m.group(2)
    return out


conf_defaults, env_defaults = defaults(CONF), defaults(ENV_EXAMPLE)
for name, value in conf_defaults.items():
    if name in ("HOST", "REDIS_URL"):    # the container's own values
        continue
    check(env_defaults.get(name) == value,
          f".env.example shows the default of {name} that rtwsd.conf shows",
          f"{env_defaults.get(name)!r} != {value!r}")

shown = help_variables()
if shown is None:
    log("note: rtwsd --help could not be read; checked against the built-in list only")
else:
    check(shown <= set(conf_names), "rtwsd.conf lists every variable of rtwsd --help",
          f"missing {sorted(shown - set(conf_names))}")

with open(RTWSD_MAN, encoding="utf-8") as f:
    man = f.read()
environment = man.split("\n.SH ENVIRONMENT\n", 1)[-1].split("\n.SH ", 1)[0]
documented = set(re.findall(r"^\.TP\n\.B ([A-Z][A-Z0-9_]+)$", environment, re.M))
check(set(VARIABLES) <= documented, "rtwsd(8) has an ENVIRONMENT entry for every variable",
      f"missing {sorted(set(VARIABLES) - documented)}")
for name, value in conf_defaults.items():
    if value:
        entry = environment.split(f".TP\n.B {name}\n", 1)[-1].split("\n.TP", 1)[0]
        check(value in entry, f"rtwsd(8) gives the default of {name} as rtwsd.conf does",
              f"{value!r} not in its entry")
plain = man.replace("\\-", "-")
for option in ("--config", "--check-config", "--host", "--port", "--help", "--version"):
    check(re.search(r"^\.(?:B|BI|BR|RB)\b.*" + re.escape(option) + r"\b", plain, re.M),
          f"rtwsd(8) documents {option}")
for word in ("SIGTERM", "SIGINT", "SIGHUP", "1001"):
    check(word in man, f"rtwsd(8) mentions {word}")
check(re.search(r"\.SH EXIT STATUS\n\.TP\n\.B 0\n.*\.B 1\n.*\.B 2\n", man, re.S),
      "rtwsd(8) lists exit statuses 0, 1 and 2")

with open(TOKEN_MAN, encoding="utf-8") as f:
    token_man = f.read().replace("\\-", "-")
for option in ("--sub", "--exp", "--aud", "--iss", "--claim", "--key", "--help"):
    check(option in token_man, f"rtws-token(1) documents {option}")
finish()
