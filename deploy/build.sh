#!/usr/bin/env bash
# Configures and builds virtgate into ./build (or $BUILD_DIR).
#   deploy/build.sh [extra cmake args]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
