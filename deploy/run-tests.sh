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
#   deploy/run-tests.sh                 # everything (what CI runs)
#   deploy/run-tests.sh -L unit         # extra arguments go to every ctest run
#   VIRTGATE_SANITIZE=0 deploy/run-tests.sh   # skip the sanitizer pass
#   VIRTGATE_FUZZ=0 deploy/run-tests.sh       # skip the fuzz pass
#   VIRTGATE_FUZZ_SECONDS=600 deploy/run-tests.sh   # each fuzz target 10 min
#
# With ctest arguments (a label, a test name...), only build/ is built and
# tested: the thread-safety build, the sanitizer pass and the fuzz pass are
# skipped unless asked for with VIRTGATE_THREAD_SAFETY=1, VIRTGATE_SANITIZE=1
# or VIRTGATE_FUZZ=1, so `-L unit` takes one build and seconds of tests, not
# four builds. Without arguments each pass runs unless set to 0.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh test

# Each extra pass: on by default for a whole run, off when ctest arguments
# narrow it; an explicit 0 or 1 wins either way.
default_pass=1
if [ "$#" -gt 0 ]; then default_pass=0; fi
thread_safety="${VIRTGATE_THREAD_SAFETY:-$default_pass}"
sanitize="${VIRTGATE_SANITIZE:-$default_pass}"
fuzz="${VIRTGATE_FUZZ:-$default_pass}"

echo "== build (gcc, -Wall -Wextra)"
BUILD_DIR=build deploy/build.sh -DVIRTGATE_BUILD_TESTS=ON

if [ "$thread_safety" = "0" ]; then
  echo "== -Wthread-safety build skipped (VIRTGATE_THREAD_SAFETY=1 runs it)"
elif command -v clang++ >/dev/null; then
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

if [ "$sanitize" = "0" ]; then
  echo "== sanitizer pass skipped (VIRTGATE_SANITIZE=1 runs it)"
else
  echo "== build with -fsanitize=address,undefined"
  BUILD_DIR=build-asan deploy/build.sh -DVIRTGATE_BUILD_TESTS=ON -DVIRTGATE_SANITIZE=ON
  mkdir -p build-asan/bench
  echo "== tests under ASan + UBSan"
  # Any report fails the test (UBSan does not recover; ASan and LSan exit 1).
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure --no-tests=ignore -j 2 -LE bench "$@"
fi

if [ "$fuzz" = "0" ]; then
  echo "== fuzz pass skipped (VIRTGATE_FUZZ=1 runs it)"
else
  echo "== libFuzzer targets (clang, ASan + UBSan)"
  CC=clang CXX=clang++ BUILD_DIR=build-fuzz deploy/build.sh -DVIRTGATE_FUZZ=ON \
    -DVIRTGATE_BUILD_TESTS=OFF -DVIRTGATE_FUZZ_SECONDS="${VIRTGATE_FUZZ_SECONDS:-60}"
  echo "== fuzzing"
  # A crash, leak, UB report, slow input or memory blow-up fails its test;
  # the input is kept in build-fuzz/fuzz-artifacts/.
  ctest --test-dir build-fuzz -L fuzz --output-on-failure --no-tests=ignore -j 2 "$@"
fi
