#!/usr/bin/env bash
# Builds the virtgate image from deploy/Containerfile with buildah, without a
# Docker engine and with nothing from outside Debian's archive: the Debian
# 12 base both stages start from is made here with debootstrap (minbase)
# and kept, so only the first build pays for it.
#
#   deploy/image.sh                  # -> localhost/virtgate:latest
#   deploy/image.sh --refresh-base   # debootstrap the base again
#
# Environment:
#   VIRTGATE_IMAGE           the tag (default localhost/virtgate:latest)
#   VIRTGATE_IMAGE_CACHE     where the base tarball is kept
#                            (default ${XDG_CACHE_HOME:-$HOME/.cache}/virtgate)
#   VIRTGATE_CONTAINER_ROOT  a private container storage (buildah/podman
#                            --root); default: the system's own storage
#
# Needs root (debootstrap; buildah's chroot isolation); installs buildah,
# podman, debootstrap and runc from Debian if missing. Prints the image's
# size and how long the build took.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${VIRTGATE_IMAGE:-localhost/virtgate:latest}"
cache="${VIRTGATE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/virtgate}"
base_tar="$cache/bookworm-minbase.tar"
base_image="localhost/virtgate-base:bookworm"

deploy/install-deps.sh image
source deploy/container-storage.sh   # ctr_opts: the storage to use

if [ "${1:-}" = "--refresh-base" ]; then rm -f "$base_tar"; fi
mkdir -p "$cache"
started=$(date +%s)

mirror() {  # the Debian mirror this machine's apt uses (first non-security one)
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -v '^ *#' \
        | grep -oE 'https?://[^ ]+' | grep -v security | head -1) || true
  echo "${uri:-http://deb.debian.org/debian}"
}

if [ ! -s "$base_tar" ]; then
  echo "image: debootstrap --variant=minbase bookworm (once; kept in $base_tar)"
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  debootstrap --variant=minbase bookworm "$root" "$(mirror)" >"$cache/debootstrap.log" 2>&1 \
    || { echo "debootstrap failed; see $cache/debootstrap.log" >&2; exit 1; }
  # Updates and security fixes too, as Docker's debian images have.
  cat >"$root/etc/apt/sources.list" <<SOURCES
deb $(mirror) bookworm main
deb $(mirror) bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*
  tar -C "$root" --numeric-owner -cf "$base_tar.tmp" .
  mv "$base_tar.tmp" "$base_tar"
  rm -rf "$root"
  trap - EXIT
fi
if ! podman "${ctr_opts[@]}" image exists "$base_image"; then
  podman "${ctr_opts[@]}" import --quiet "$base_tar" "$base_image" >/dev/null
fi

revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
version=$(sed -n 's/^project(virtgate VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
source_url=$(git remote get-url origin 2>/dev/null || true)
echo "image: buildah bud $image (version $version, revision $revision)"
# --layers: unchanged steps (the builder's apt-get) come from the cache.
# --format docker: OCI images have no HEALTHCHECK.
buildah "${ctr_opts[@]}" bud --isolation chroot --pull=never --layers --format docker \
  --build-arg BUILDER_IMAGE="$base_image" --build-arg RUNTIME_IMAGE="$base_image" \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  --build-arg SOURCE="$source_url" \
  -f deploy/Containerfile -t "$image" .
size=$(podman "${ctr_opts[@]}" image inspect --format '{{.Size}}' "$image")
echo "image: $image built in $(( $(date +%s) - started )) s; $(( size / 1000000 )) MB"
