#!/bin/sh
# test_fuzz_smoke.sh - make check's short run of every fuzz target.
#
# Builds the libFuzzer targets of tests/fuzz with clang (scripts/fuzz),
# replays every input in tests/fuzz/regressions (each once crashed a
# module) and every seed in tests/fuzz/corpus, then fuzzes each target for
# FUZZ_SMOKE_SECONDS (default 5). A crash or a broken property fails the
# test and names the input. Exit 77 (skipped) when clang with libFuzzer is
# not installed: make fuzz is the long run.
set -u
srcdir=${RTWS_TOP_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
builddir=${RTWS_TOP_BUILDDIR:-.}
exec "${SHELL:-/bin/sh}" "$srcdir/scripts/fuzz" --smoke --builddir "$builddir" \
    --seconds "${FUZZ_SMOKE_SECONDS:-5}" --jobs 1
