#!/usr/bin/env bash
# The README's second command (and what CI runs): installs what is needed
# from Debian, builds, checks lock annotations with clang -Wthread-safety,
# and runs every test (unit, service, integration, cli, slow) and the
# benchmarks, whose figures land in build/bench/.
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
echo "== tests"
# ctest runs every label; --output-on-failure shows what a failing test said.
ctest --test-dir build --output-on-failure --no-tests=error -j 2 "$@"
