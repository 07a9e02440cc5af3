#!/usr/bin/env bash
# Installs what virtgate needs from Debian 12's package archive, and nothing
# else from anywhere. Idempotent: installs only what is missing. Uses sudo
# only when not root.
#
#   deploy/install-deps.sh build   # compile virtgated and virtgatectl
#   deploy/install-deps.sh test    # build + tests, benchmarks, clang checks
#   deploy/install-deps.sh libvirtd  # a private libvirtd (deploy/dev-libvirtd.sh)
#   deploy/install-deps.sh image     # build and run the container image
set -euo pipefail

what="${1:-build}"
build_pkgs=(cmake ninja-build g++ pkg-config
  libgrpc++-dev protobuf-compiler-grpc protobuf-compiler libprotobuf-dev grpc-proto
  libabsl-dev libvirt-dev libssl-dev libsystemd-dev libmicrohttpd-dev
  # test:///default needs only libvirt itself; libvirt-clients gives virsh.
  libvirt-clients)
# deploy/image.sh: buildah builds without a Docker engine, on a base made by
# debootstrap; podman (with runc: crun cannot set rlimits in some sandboxes)
# runs it.
image_pkgs=(buildah podman runc debootstrap podman-compose curl)
test_pkgs=(libgtest-dev libgmock-dev libbenchmark-dev
  # a real libvirtd for the integration tests (started privately by the tests)
  libvirt-daemon
  # a private libvirtd that wants a SASL login (the libvirt credentials test):
  # saslpasswd2, and the SCRAM module
  sasl2-bin libsasl2-modules
  # the -Wthread-safety build; the ASan/UBSan runtime comes with gcc
  clang
  # the fuzz targets: libFuzzer and clang's own ASan/UBSan runtimes (only
  # recommended by clang, so --no-install-recommends leaves them out)
  libclang-rt-14-dev
  # end-to-end tests: QEMU guests (TCG) under a system libvirtd
  libvirt-daemon-system qemu-system-x86
  # deploy checks: systemd-analyze verify/security on the unit; openssl
  # makes the TLS tests' certificates
  systemd openssl
  # deploy checks of deploy/k8s and deploy/compose*.yaml: yamllint, and the
  # Kubernetes API's models (1.22) the validator checks manifests against
  yamllint python3-yaml python3-kubernetes
  # the metrics test: a real Prometheus scrapes virtgated; promtool checks
  # the exposition
  prometheus
  # the container image (deploy/image.sh) and its run test
  "${image_pkgs[@]}")

case "$what" in
  build) pkgs=("${build_pkgs[@]}") ;;
  test) pkgs=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  libvirtd) pkgs=(libvirt-daemon libvirt-clients) ;;
  image) pkgs=("${image_pkgs[@]}") ;;
  *) echo "usage: $0 build|test|libvirtd|image" >&2; exit 2 ;;
esac

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} Debian packages already installed"
  exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
