#!/usr/bin/env bash
# The README's second command (and what CI runs): installs what is needed
# from Debian, builds, checks lock annotations with clang -Wthread-safety,
# runs every test (unit, service, integration, cli, resilience, e2e, slow)
# and the benchmarks, whose figures land in build/bench/, then builds again
# with AddressSanitizer + UndefinedBehaviorSanitizer and runs every test
# again under them (benchmarks excepted: sanitized timings mean nothing),
# and last builds the libFuzzer targets with clang (tests/fuzz) and runs
# each for VIRTGATE_FUZZ_SECONDS (default 60).
#
#   deploy/run-tests.sh                 # everything
#   deploy/run-tests.sh -L unit         # extra arguments go to every ctest run
#   VIRTGATE_SANITIZE=0 deploy/run-tests.sh   # skip the sanitizer pass
#   VIRTGATE_FUZZ=0 deploy/run-tests.sh       # skip the fuzz pass
#   VIRTGATE_FUZZ_SECONDS=600 deploy/run-tests.sh   # each fuzz target 10 min
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh test

echo "== build (gcc, -Wall -Wextra)"
BUILD_DIR=build deploy/build.sh -DVIRTGATE_BUILD_TESTS=ON

if command -v clang++ >/dev/null; then
  echo "== clang -Wthread-safety -Werror build of the server and client"
  CC=clang CXX=clang++ BUILD_DIR=build-tsa deploy/build.sh \
    -DVIRTGATE_THREAD_SAFETY=ON -DVIRTGATE_BUILD_TESTS=OFF
else
  echo "== clang not installed: skipping the -Wthread-safety build"
fi

mkdir -p build/bench
# A test that finds something missing skips (ctest: "Skipped", exit 77). CI
# installed everything above, so there a skip is a failure.
if [ "${CI:-}" = "true" ]; then export VIRTGATE_NO_SKIPS=1; fi
echo "== tests"
# ctest runs every label; --output-on-failure shows what a failing test said.
ctest --test-dir build --output-on-failure --no-tests=error -j 2 "$@"

if [ "${VIRTGATE_SANITIZE:-1}" != "0" ]; then
  echo "== build with -fsanitize=address,undefined"
  BUILD_DIR=build-asan deploy/build.sh -DVIRTGATE_BUILD_TESTS=ON -DVIRTGATE_SANITIZE=ON
  mkdir -p build-asan/bench
  echo "== tests under ASan + UBSan"
  # Any report fails the test (UBSan does not recover; ASan and LSan exit 1).
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure --no-tests=ignore -j 2 -LE bench "$@"
fi

if [ "${VIRTGATE_FUZZ:-1}" != "0" ]; then
  echo "== libFuzzer targets (clang, ASan + UBSan)"
  CC=clang CXX=clang++ BUILD_DIR=build-fuzz deploy/build.sh -DVIRTGATE_FUZZ=ON \
    -DVIRTGATE_BUILD_TESTS=OFF -DVIRTGATE_FUZZ_SECONDS="${VIRTGATE_FUZZ_SECONDS:-60}"
  echo "== fuzzing"
  # A crash, leak, UB report, slow input or memory blow-up fails its test;
  # the input is kept in build-fuzz/fuzz-artifacts/.
  ctest --test-dir build-fuzz -L fuzz --output-on-failure --no-tests=ignore -j 2 "$@"
fi
