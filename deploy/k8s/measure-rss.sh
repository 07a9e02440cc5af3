#!/usr/bin/env bash
# Where the DaemonSet's memory request and limit come from: virtgated (TLS +
# mTLS, default flags otherwise) in front of a private libvirtd serving the
# test driver with N domains (default 1,000, half running, defined after
# virtgated connected). Prints virtgated's VmRSS once idle; then, PHASES
# times, runs `virtgatectl list` ROUNDS times in each of PARALLEL loops at
# once and prints VmRSS and the peak (VmHWM) after each phase.
#   deploy/k8s/measure-rss.sh [VIRTGATED] [VIRTGATECTL]
#   N=1000 ROUNDS=50 PARALLEL=4 PHASES=4 deploy/k8s/measure-rss.sh build/virtgated build/virtgatectl
# Everything runs as the calling user in a temp dir; libvirtd and virtgated
# are stopped by pid at the end.
set -euo pipefail
src="$(cd "$(dirname "$0")/../.." && pwd)"
virtgated="$(realpath "${1:-$src/build/virtgated}")"
ctl="$(realpath "${2:-$src/build/virtgatectl}")"
n="${N:-1000}" rounds="${ROUNDS:-50}" parallel="${PARALLEL:-4}" phases="${PHASES:-4}"
port="${PORT:-50151}"
dir="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.1; done; done
  rm -rf "$dir"
}
trap cleanup EXIT

mkdir -p "$dir/xml" "$dir/tmp"
# The private libvirtd of deploy/dev-libvirtd.sh, in our temp dir.
DIR="$dir" "$src/deploy/dev-libvirtd.sh" >/dev/null
pids+=("$(cat "$dir/libvirtd.pid")")
uri="test+unix:///default?socket=$dir/sock/libvirt-sock"

"$src/deploy/make-certs.sh" "$dir/certs" >/dev/null
c="$dir/certs"
TMPDIR="$dir/tmp" "$virtgated" --libvirt_uri="$uri" --listen="127.0.0.1:$port" \
  --tls_cert="$c/server.crt" --tls_key="$c/server.key" --tls_client_ca="$c/ca.crt" \
  --log_level=warning 2>"$dir/virtgated.log" &
vpid=$!
pids+=("$vpid")
tls=(--server="127.0.0.1:$port" --tls_ca="$c/ca.crt" --tls_cert="$c/orchestrator.crt" --tls_key="$c/orchestrator.key")
for _ in $(seq 100); do
  [ "$("$ctl" "${tls[@]}" health virtgate.v1.Hypervisor 2>/dev/null)" = SERVING ] && break
  sleep 0.1
done
mem() { awk -v k="$1" '$1 == k":" { printf "%.1f MiB", $2 / 1024 }' "/proc/$vpid/status"; }
echo "serving, before the domains are defined: VmRSS $(mem VmRSS)"
# The test driver's shared state lives only while some connection holds it,
# so the domains are defined once virtgated is connected. One virsh session
# defines them all (a virsh per domain takes minutes).
for i in $(seq -w 1 "$n"); do
  sed "s|<name>demo</name>|<name>vm-$i</name>|" "$src/deploy/dev/demo-domain.xml" >"$dir/xml/$i.xml"
  echo "define $dir/xml/$i.xml" >>"$dir/cmds"
  if [ $((10#$i % 2)) -eq 0 ]; then echo "start vm-$i" >>"$dir/cmds2"; fi
done
cat "$dir/cmds" "$dir/cmds2" | virsh -q -c "$uri" >/dev/null
echo "domains: $(virsh -q -c "$uri" list --all --name | grep -c .) defined, $(virsh -q -c "$uri" list --name | grep -c .) running"
"$ctl" "${tls[@]}" list | tail -n +2 | wc -l | sed 's/^/listed: /'
sleep 5
echo "idle after one listing: VmRSS $(mem VmRSS), VmHWM $(mem VmHWM)"
loop() { for _ in $(seq "$rounds"); do "$ctl" "${tls[@]}" list >/dev/null; done; }
# virtgated's CPU time (user + system), in seconds.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$vpid/stat"; }
for phase in $(seq "$phases"); do
  cpu0=$(cpu)
  start=$(date +%s.%N)
  lpids=()
  for _ in $(seq "$parallel"); do loop & lpids+=($!); done
  for p in "${lpids[@]}"; do wait "$p"; done
  end=$(date +%s.%N)
  echo "phase $phase: $((rounds * parallel)) listings ($parallel at once) in $(echo "$end - $start" | bc) s, virtgated CPU $(echo "$(cpu) - $cpu0" | bc) s: VmRSS $(mem VmRSS), peak VmHWM $(mem VmHWM)"
done
# Paged listings' snapshots go 60 s after their last use, and virtgated gives
# back what malloc holds free every 10 s (MemoryTrimmer).
sleep 12
echo "idle again 12 s later: VmRSS $(mem VmRSS), peak VmHWM $(mem VmHWM)"
sleep 60
echo "idle 72 s later (snapshots expired): VmRSS $(mem VmRSS)"
echo "threads: $(awk '$1 == "Threads:" { print $2 }' "/proc/$vpid/status")"
