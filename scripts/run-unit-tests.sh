#!/bin/sh
# run-unit-tests.sh BUILD_DIR - run every unit test binary and summarise.
# Runs from the repository root so tests find tests/data. Under a sanitizer
# build, leak reports that originate inside the OpenCL runtime are
# suppressed (tests/lsan.supp); ours are not.
set -u
build=${1:-build}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
pass=0; fail=0; failed=""
for t in "$build"/tests/test_*; do
  [ -x "$t" ] || continue
  t0=$(date +%s)
  if "$t"; then pass=$((pass+1)); else fail=$((fail+1)); failed="$failed $(basename "$t")"; fi
  echo "     $(basename "$t"): $(( $(date +%s) - t0 )) s"
done
# Replay every fuzz corpus through its target (no crash, no hang, no
# sanitizer report on any seed).
for r in "$build"/fuzz/replay_fuzz_*; do
  [ -x "$r" ] || continue
  n=$(basename "$r"); n=${n#replay_fuzz_}
  if [ -d tests/fuzz/corpus/$n ] && timeout 300 "$r" tests/fuzz/corpus/$n/*; then
    pass=$((pass+1)); echo "ok   corpus $n ($(ls tests/fuzz/corpus/$n | wc -l) inputs)"
  else fail=$((fail+1)); failed="$failed corpus-$n"; fi
done
echo "unit tests: $pass passed, $fail failed${failed:+ (}${failed# }${failed:+)}"
[ $fail -eq 0 ]
