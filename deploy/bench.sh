#!/usr/bin/env bash
# virtgate beside the raw libvirt floor at every scale, in one run: installs
# what it needs (Debian packages), builds, and runs tests/bench/virtgate_bench
# against a private test-driver libvirtd and the real virtgated. Figures go to
# build/bench/virtgate_bench.json and .md (the README's Performance table).
#
#   deploy/bench.sh           # the full run: N up to 20,000 (about 5 minutes)
#   deploy/bench.sh --quick   # small N, seconds (CI runs this)
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh test
BUILD_DIR="${BUILD_DIR:-build}" deploy/build.sh -DVIRTGATE_BUILD_TESTS=ON
build_dir="${BUILD_DIR:-build}"
mkdir -p "$build_dir/bench"
exec "$build_dir/tests/virtgate_bench" --out="$build_dir/bench" "$@"
