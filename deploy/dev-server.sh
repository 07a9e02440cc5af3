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
# What virtgated will use: the last --libvirt_uri/--listen given (as
# --flag=VALUE or --flag VALUE) beats the defaults below, as in virtgated.
uri=test:///default
listen=127.0.0.1:50051
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --libvirt_uri=*|-libvirt_uri=*) uri="${args[i]#*=}" ;;
    --listen=*|-listen=*) listen="${args[i]#*=}" ;;
    --libvirt_uri|-libvirt_uri) uri="${args[i + 1]:-}" ;;
    --listen|-listen) listen="${args[i + 1]:-}" ;;
  esac
done
server_flag=""
[ "$listen" = 127.0.0.1:50051 ] || server_flag=" --server '$listen'"
grpcurl_target="$listen"
case "$listen" in unix:*) grpcurl_target="-unix ${listen#unix:}" ;; esac
example=NAME
case "$uri" in test:*|test+*) example=test ;; esac  # the test driver's own domain
cat <<MSG

virtgated is starting on $uri at $listen. In another terminal:
  $ctl$server_flag list                 # NAME UUID ID STATE VCPUS MEMORY
  $ctl$server_flag list -o json
  $ctl$server_flag get $example
  $ctl$server_flag host
  $ctl$server_flag health
  grpcurl -plaintext $grpcurl_target list                         # if you have grpcurl
  grpcurl -plaintext $grpcurl_target virtgate.v1.Hypervisor/ListDomains

MSG
exec "${BUILD_DIR:-build}/virtgated" --libvirt_uri=test:///default --listen=127.0.0.1:50051 "$@"
