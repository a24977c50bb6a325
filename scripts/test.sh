#!/bin/sh
# test.sh - the README's test command: install what is missing, build, run
# every test (release build, then the sanitizer build, then a bounded fuzz
# run). Exit status 0 only if everything passed.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
echo "== build + unit tests"
make -j"$jobs" all
make test
echo "== sanitizer build (ASan + UBSan) + unit tests"
make -j"$jobs" BUILD=build-asan SANITIZE=1 all
make BUILD=build-asan SANITIZE=1 test
echo "== fuzz (bounded)"
make fuzz-run FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
echo "== all tests passed"
