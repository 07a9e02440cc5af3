#!/usr/bin/env bash
# The README's first command: installs what is needed from Debian, builds,
# and runs virtgated on libvirt's embedded test driver (test:///default),
# listening on 127.0.0.1:50051. Ctrl-C stops it.
#   deploy/dev-server.sh [extra virtgated flags]
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh build
BUILD_DIR="${BUILD_DIR:-build}" deploy/build.sh -DVIRTGATE_BUILD_TESTS=OFF
ctl="$PWD/${BUILD_DIR:-build}/virtgatectl"
cat <<MSG

virtgated is starting on test:///default at 127.0.0.1:50051. In another terminal:
  $ctl list                 # NAME UUID ID STATE VCPUS MEMORY
  $ctl list -o json
  $ctl get test
  $ctl host
  $ctl health
  grpcurl -plaintext 127.0.0.1:50051 list                         # if you have grpcurl
  grpcurl -plaintext 127.0.0.1:50051 virtgate.v1.Hypervisor/ListDomains

MSG
exec "${BUILD_DIR:-build}/virtgated" --libvirt_uri=test:///default --listen=127.0.0.1:50051 "$@"
