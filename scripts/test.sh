#!/usr/bin/env bash
# The test command (README and .ci/run): installs what is needed, then builds
# and runs the whole suite twice — an -O2 -Werror gcc build, and a clang
# AddressSanitizer + UndefinedBehaviorSanitizer build.
#   scripts/test.sh            both builds
#   scripts/test.sh --quick    the -O2 build only
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "== tests: -O2 build (build/)" >&2
ctest --test-dir build --output-on-failure -j "$(nproc)"

if [ "${1:-}" != "--quick" ]; then
  echo "== tests: clang ASan + UBSan build (build-asan/)" >&2
  CC=clang CXX=clang++ CMR_PHANTOM_EXE="$PWD/build/tests/phantom/cmr-phantom" scripts/setup.sh --sanitize
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  LSAN_OPTIONS=suppressions="$PWD/tests/lsan.supp":print_suppressions=0 \
    ctest --test-dir build-asan --output-on-failure -j "$(nproc)"
fi
