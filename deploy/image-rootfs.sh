#!/bin/sh
# Run inside deploy/Containerfile's "rootfs" stage: assembles in /rootfs the
# image's whole file system, and nothing else:
#   - virtgated and virtgatectl;
#   - the shared libraries they load (ldd), and libsasl2's mechanism plugins
#     (loaded at run time, for a SASL-protected libvirtd) with theirs;
#   - /etc/passwd and /etc/group with root and virtgate (10001), an
#     nsswitch.conf, ld.so's cache, a 1777 /tmp;
#   - for every Debian package a file came from: its copyright file, and its
#     dpkg status in /var/lib/dpkg/status.d/ (as Google's distroless images
#     do), so image scanners still see what is inside and its version.
# No shell, package manager or coreutils: the image is the two programs.
set -eu
out=/rootfs
mkdir -p "$out/usr/bin" "$out/usr/lib/x86_64-linux-gnu" "$out/usr/lib64" "$out/etc" \
         "$out/tmp" "$out/usr/share/doc"
chmod 1777 "$out/tmp"
# Debian 12's merged /usr: /lib is usr/lib, and so on.
for d in bin lib lib64 sbin; do ln -s "usr/$d" "$out/$d"; done
mkdir -p "$out/usr/sbin"
cp /usr/local/bin/virtgated /usr/local/bin/virtgatectl "$out/usr/bin/"

plugins=$(ls /usr/lib/x86_64-linux-gnu/sasl2/*.so* 2>/dev/null || true)
libs=$(for f in /usr/local/bin/virtgated /usr/local/bin/virtgatectl $plugins; do ldd "$f"; done \
       | grep -o '/[^ ]*' | sort -u)
for f in $libs $plugins; do
  cp -a --parents "$f" "$out"                      # the name, maybe a symlink
  cp -a --parents "$(readlink -f "$f")" "$out"     # and what it points to
done
cp /etc/ld.so.cache /etc/nsswitch.conf "$out/etc/"
grep -E '^(root|virtgate):' /etc/passwd >"$out/etc/passwd"
grep -E '^(root|virtgate):' /etc/group >"$out/etc/group"

for f in $libs $plugins; do dpkg -S "$(readlink -f "$f")" 2>/dev/null || dpkg -S "$f"; done \
  | cut -d: -f1 | sort -u | while read -r pkg; do
    mkdir -p "$out/var/lib/dpkg/status.d"
    dpkg-query -s "$pkg" >"$out/var/lib/dpkg/status.d/${pkg%%:*}"
    if [ -f "/usr/share/doc/$pkg/copyright" ]; then
      mkdir -p "$out/usr/share/doc/$pkg"
      cp "/usr/share/doc/$pkg/copyright" "$out/usr/share/doc/$pkg/"
    fi
  done
echo "rootfs: $(du -sh "$out" | cut -f1), $(echo "$libs" | wc -l) libraries"
