#!/usr/bin/env bash
# Starts a private libvirtd serving libvirt's test driver on a socket of its
# own (no system socket touched, no root-owned state), for trying
# WatchLifecycle with events that cross processes:
#   deploy/dev-libvirtd.sh          # start it; prints its URI
#   deploy/dev-libvirtd.sh stop     # stop it (by its pid)
# DIR (default /tmp/virtgate-dev) holds its socket, config, pid and log.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${DIR:-/tmp/virtgate-dev}"
uri="test+unix:///default?socket=$dir/sock/libvirt-sock"

if [ "${1:-start}" = "stop" ]; then
  if [ -f "$dir/libvirtd.pid" ] && kill "$(cat "$dir/libvirtd.pid")" 2>/dev/null; then
    echo "stopped the private libvirtd ($dir)"
  else
    echo "no private libvirtd running in $dir"
  fi
  exit 0
fi

deploy/install-deps.sh libvirtd
if [ -f "$dir/libvirtd.pid" ] && kill -0 "$(cat "$dir/libvirtd.pid")" 2>/dev/null; then
  echo "already running: $uri"
  exit 0
fi
mkdir -p "$dir/sock" "$dir/drivers"
cat > "$dir/libvirtd.conf" <<CONF
unix_sock_dir = "$dir/sock"
auth_unix_rw = "none"
auth_unix_ro = "none"
listen_tcp = 0
listen_tls = 0
CONF
LIBVIRT_DRIVER_DIR="$dir/drivers" setsid /usr/sbin/libvirtd -f "$dir/libvirtd.conf" \
  --pid-file "$dir/libvirtd.pid" </dev/null >"$dir/libvirtd.log" 2>&1 &
for _ in $(seq 100); do
  if virsh -q -c "$uri" version >/dev/null 2>&1; then
    cat <<MSG
private libvirtd (test driver) is up. Its URI:
  $uri
Serve it:   deploy/dev-server.sh --libvirt_uri='$uri'
Change it:  virsh -c '$uri' define deploy/dev/demo-domain.xml   (then start/suspend/resume/destroy/undefine demo)
Stop it:    deploy/dev-libvirtd.sh stop
MSG
    exit 0
  fi
  sleep 0.1
done
echo "libvirtd did not come up; see $dir/libvirtd.log" >&2
exit 1
