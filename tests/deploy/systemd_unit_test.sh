#!/usr/bin/env bash
# deploy/systemd/virtgated.service: `systemd-analyze verify` passes (with
# ExecStart pointed at the virtgated under test, since verify wants the
# binary to exist) and its `systemd-analyze security` exposure stays at or
# below 2.0 ("OK"). Debian's libvirtd.service scores 9.6 ("UNSAFE").
#   systemd_unit_test.sh SOURCE_DIR VIRTGATED
set -euo pipefail
src="$1" virtgated="$2"
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze is missing (Debian package systemd)"
  # In CI a skip is a failure.
  if [ "${VIRTGATE_NO_SKIPS:-}" = 1 ]; then echo "VIRTGATE_NO_SKIPS=1 makes a skip a failure"; exit 1; fi
  exit 77
fi
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
sed "s|^ExecStart=/usr/local/bin/virtgated|ExecStart=$virtgated|" \
  "$src/deploy/systemd/virtgated.service" >"$dir/virtgated.service"
grep -q "^ExecStart=$virtgated" "$dir/virtgated.service"
out="$(systemd-analyze verify "$dir/virtgated.service" 2>&1)" || {
  echo "systemd-analyze verify failed:"; echo "$out"; exit 1; }
if [ -n "$out" ]; then echo "systemd-analyze verify warned:"; echo "$out"; exit 1; fi
line="$(systemd-analyze security --offline=true "$dir/virtgated.service" | grep 'Overall exposure level')"
echo "$line"
score="$(echo "$line" | sed -E 's/.*: ([0-9.]+) .*/\1/')"
awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || { echo "exposure $score > 2.0"; exit 1; }
