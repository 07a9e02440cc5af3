#!/usr/bin/env bash
# deploy.container: the image, built and run as an operator would run it
# beside libvirtd (README "Deploy"):
#   - deploy/image.sh builds it (buildah, chroot isolation, on a debootstrapped
#     base kept in VIRTGATE_IMAGE_CACHE); its size, user, entrypoint, labels
#     and HEALTHCHECK are as documented;
#   - a private libvirtd (test driver) runs on the host in a mount namespace
#     whose /etc/passwd and /etc/group hold what README asks of a node: user
#     virtgate (10001) and the socket's group (here vgtest-sock, 10002, the
#     socket mode 0770);
#   - the container runs read-only, with no capabilities, as 10001 with
#     --group-add 10002, the socket DIRECTORY bind-mounted read-only at
#     /run/libvirt; from outside, virtgatectl lists libvirtd's domains, health
#     is SERVING and `podman healthcheck run` passes;
#   - libvirtd killed: health NOT_SERVING; restarted (a new socket in the
#     same directory): the same container serves again, never restarted;
#   - a container user unknown to the host: NOT_SERVING, and the reason
#     (libvirtd's "Failed to find user record") reaches GetHostInfo;
#   - podman stop (SIGTERM to virtgated, PID 1): exit code 0, not the
#     SIGKILL after the timeout;
#   - deploy/compose.yaml, as written, with podman-compose: virtgated
#     serves the demo libvirtd's test domain on 127.0.0.1:50051 and sees a
#     suspend made through `compose exec libvirtd virsh`.
#   container_test.sh SOURCE_DIR VIRTGATECTL OUT_DIR
set -euo pipefail
src="$1" virtgatectl="$2" out="$3"
skip() {  # exit 77 is ctest's "skipped"; in CI (VIRTGATE_NO_SKIPS=1) a failure
  echo "SKIP: $*"
  if [ "${VIRTGATE_NO_SKIPS:-}" = 1 ]; then echo "VIRTGATE_NO_SKIPS=1 makes a skip a failure"; exit 1; fi
  exit 77
}
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, buildah's chroot isolation, mount namespaces)"
for c in buildah podman runc debootstrap podman-compose libvirtd virsh unshare; do
  command -v "$c" >/dev/null || skip "$c is missing (deploy/install-deps.sh test installs it)"
done

export VIRTGATE_IMAGE_CACHE="${VIRTGATE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/virtgate}"
export VIRTGATE_CONTAINER_ROOT="${VIRTGATE_CONTAINER_ROOT:-$VIRTGATE_IMAGE_CACHE/containers}"
export VIRTGATE_IMAGE="localhost/virtgate:test"
source "$src/deploy/container-storage.sh"
pod() { podman "${ctr_opts[@]}" "$@"; }
work="$(mktemp -d)"
chmod 755 "$work"
containers=()
cleanup() {
  for c in "${containers[@]}"; do pod rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
  if [ -n "${compose_up:-}" ]; then
    compose down -v -t 0 >/dev/null 2>&1 || true
    # The network compose made (a CNI file in /etc/cni/net.d): down keeps it.
    podman network rm -f "virtgate-test-$$_default" >/dev/null 2>&1 || true
  fi
  stop_libvirtd
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# Polls (every 0.2 s) until "$@" succeeds, for at most $timeout seconds.
timeout=60
wait_for() {
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== build the image"
mkdir -p "$out"
"$src/deploy/image.sh" | tee "$out/image-build.log"
inspect() { pod image inspect --format "$1" "$VIRTGATE_IMAGE"; }
size_mb=$(( $(inspect '{{.Size}}') / 1000000 ))
echo "image size: $size_mb MB" | tee "$out/image-size.txt"
[ "$(inspect '{{.Config.User}}')" = "10001:10001" ] || fail "image user is not 10001:10001"
[ "$(inspect '{{json .Config.Entrypoint}}')" = '["virtgated"]' ] || fail "entrypoint"
# (Output captured before grep -q: with pipefail, a grep that stops reading
# early fails the writer with SIGPIPE.)
healthcheck=$(inspect '{{json .Config.Healthcheck}}')
grep -q 'virtgatectl' <<<"$healthcheck" || fail "no HEALTHCHECK: $healthcheck"
version=$(inspect '{{index .Labels "org.opencontainers.image.version"}}')
grep -qE '^[0-9]+\.' <<<"$version" || fail "no version label: $version"

echo "== a private libvirtd on a node that has user virtgate (10001)"
mkdir -p "$work/sock" "$work/drivers" "$work/etc"
chmod 755 "$work/sock"
# A copy of this machine's user database, changed by README's own commands
# (--prefix: in the copy), which libvirtd will see as /etc.
cp /etc/passwd /etc/group /etc/shadow /etc/gshadow "$work/etc/"
groupadd --prefix "$work" --gid 10001 virtgate
useradd --prefix "$work" --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
  --shell /usr/sbin/nologin virtgate
groupadd --prefix "$work" --gid 10002 vgtest-sock
for cmd in 'groupadd --gid 10001 virtgate' 'useradd --uid 10001 --gid 10001 --no-create-home'; do
  grep -qF "$cmd" "$src/README.md" || fail "README no longer says '$cmd': keep this test in step"
done
cat >"$work/libvirtd.conf" <<CONF
unix_sock_dir = "$work/sock"
unix_sock_group = "vgtest-sock"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
auth_unix_ro = "none"
listen_tcp = 0
listen_tls = 0
CONF
host_uri="test+unix:///default?socket=$work/sock/libvirt-sock"
start_libvirtd() {
  rm -f "$work/libvirtd.pid"
  LIBVIRT_DRIVER_DIR="$work/drivers" setsid unshare --mount --propagation private \
    sh -c 'mount --bind "$1/etc/passwd" /etc/passwd && mount --bind "$1/etc/group" /etc/group &&
           exec libvirtd -f "$1/libvirtd.conf" --pid-file "$1/libvirtd.pid"' sh "$work" \
    </dev/null >>"$work/libvirtd.log" 2>&1 &
  disown  # killed on purpose later; no job notice
  wait_for virsh -q -c "$host_uri" version || fail "libvirtd did not start: $(tail -5 "$work/libvirtd.log")"
}
stop_libvirtd() {
  if [ -s "$work/libvirtd.pid" ]; then kill -9 "$(cat "$work/libvirtd.pid")" 2>/dev/null || true; fi
}
start_libvirtd

port=$(free_port) hport=$(free_port) mport=$(free_port)
run_container() {  # NAME USER PORT HEALTH_PORT METRICS_PORT
  containers+=("$1")
  # --health-interval=disable: podman's own HEALTHCHECK timer needs a
  # running systemd (the CI machine has none); the test runs the check
  # itself with `podman healthcheck run`.
  pod run -d --name "$1" --runtime runc --network host \
    --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
    --read-only --tmpfs /tmp --cap-drop=all --security-opt no-new-privileges \
    --health-interval=disable \
    --user "$2" --group-add 10002 -v "$work/sock:/run/libvirt:ro" \
    -e VIRTGATE_LIBVIRT_URI='test+unix:///default?socket=/run/libvirt/libvirt-sock' \
    -e VIRTGATE_LISTEN="127.0.0.1:$3" -e VIRTGATE_HEALTH_LISTEN="127.0.0.1:$4" \
    -e VIRTGATE_SERVER="127.0.0.1:$4" -e VIRTGATE_METRICS_LISTEN="127.0.0.1:$5" \
    -e VIRTGATE_KEEPALIVE_INTERVAL=1 \
    -e VIRTGATE_KEEPALIVE_COUNT=2 "$VIRTGATE_IMAGE" >/dev/null
}
health() {  # SERVER SERVICE EXPECTED
  [ "$("$virtgatectl" --server="$1" --timeout=2s health "$2" 2>&1)" = "$3" ]
}
echo "== the container serves the private libvirtd"
name="virtgate-test-$$"
run_container "$name" 10001:10001 "$port" "$hport" "$mport"
wait_for health "127.0.0.1:$hport" virtgate.v1.Hypervisor SERVING \
  || fail "health not SERVING; container log: $(pod logs "$name" 2>&1 | tail -20)"
"$virtgatectl" --server="127.0.0.1:$port" list | tee "$work/list.txt"
grep -qE '^test +' "$work/list.txt" || fail "virtgatectl list does not show the test driver's domain"
pod healthcheck run "$name" || fail "the image's HEALTHCHECK failed"
pid=$(pod inspect --format '{{.State.Pid}}' "$name")
grep -qE '^Uid:\s+10001\s' "/proc/$pid/status" || fail "virtgated does not run as 10001"
grep -qE '^Groups:.*\b10002\b' "/proc/$pid/status" || fail "virtgated lacks group 10002"
[ "$(cat "/proc/$pid/comm")" = virtgated ] || fail "PID 1 of the container is not virtgated"
curl -fsS "http://127.0.0.1:$mport/metrics" >"$work/metrics.txt" || fail "no /metrics from the container"
grep -qE '^virtgate_domains\{state="running"\} 1$' "$work/metrics.txt" \
  || fail "the container's /metrics does not count the running test domain"

echo "== libvirtd killed and restarted: the same container serves again"
started_at=$(pod inspect --format '{{.State.StartedAt}}' "$name")
stop_libvirtd
wait_for health "127.0.0.1:$hport" virtgate.v1.Hypervisor NOT_SERVING \
  || fail "health still SERVING after libvirtd died"
start_libvirtd
timeout=90 wait_for health "127.0.0.1:$hport" virtgate.v1.Hypervisor SERVING \
  || fail "not SERVING again after libvirtd restarted; log: $(pod logs "$name" 2>&1 | tail -20)"
"$virtgatectl" --server="127.0.0.1:$port" list >"$work/list.txt"
grep -qE '^test +' "$work/list.txt" || fail "list after restart"
[ "$(pod inspect --format '{{.State.StartedAt}} {{.State.Pid}}' "$name")" = "$started_at $pid" ] \
  || fail "the container was restarted"

echo "== a container user the host does not know"
stranger="virtgate-test-stranger-$$"
port2=$(free_port) hport2=$(free_port) mport2=$(free_port)
run_container "$stranger" 10003:10003 "$port2" "$hport2" "$mport2"
wait_for "$virtgatectl" --server="127.0.0.1:$port2" host || fail "the stranger's virtgated did not start"
health "127.0.0.1:$hport2" virtgate.v1.Hypervisor NOT_SERVING \
  || fail "a uid unknown to libvirtd's host is served"
"$virtgatectl" --server="127.0.0.1:$port2" -o json host | tee "$work/host.json"
grep -q 'Failed to find user record' "$work/host.json" || fail "GetHostInfo does not say why"

echo "== podman stop: SIGTERM to virtgated (PID 1) ends it with exit 0"
pod stop --time 30 "$name" >/dev/null
code=$(pod inspect --format '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "exit code $code after SIGTERM; log: $(pod logs "$name" 2>&1 | tail -5)"
log=$(pod logs "$name" 2>&1)
grep -q 'received SIGTERM' <<<"$log" || fail "virtgated did not log the SIGTERM: $log"

echo "== compose: deploy/compose.yaml as written"
# podman-compose runs plain podman: point it at the test's storage (and at
# runc, with the rlimits this sandbox allows) through podman's own config
# variables. The image it names is the one just built; its libvirtd service
# starts from debian:bookworm-slim, here the debootstrapped base.
printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' \
  "$VIRTGATE_CONTAINER_ROOT/storage" "$VIRTGATE_CONTAINER_ROOT/run" >"$work/storage.conf"
printf '[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n' \
  >"$work/containers.conf"
export CONTAINERS_STORAGE_CONF="$work/storage.conf" CONTAINERS_CONF="$work/containers.conf"
pod tag "$VIRTGATE_IMAGE" localhost/virtgate:latest
pod tag localhost/virtgate-base:bookworm docker.io/library/debian:bookworm-slim
for p in 50051 50052 50053; do
  ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || fail "127.0.0.1:$p is taken; the compose demo publishes it"
done
compose() { podman-compose -p "virtgate-test-$$" -f "$src/deploy/compose.yaml" "$@"; }
compose_up=1
compose up -d >"$work/compose.log" 2>&1 || fail "compose up: $(tail -20 "$work/compose.log")"
# Its libvirtd service installs Debian's libvirt-daemon first.
timeout=300 wait_for health 127.0.0.1:50052 virtgate.v1.Hypervisor SERVING \
  || fail "the compose demo never served; $(podman logs "virtgate-test-$$_virtgated_1" 2>&1 | tail)"
"$virtgatectl" --server=127.0.0.1:50051 list >"$work/list.txt"
grep -qE '^test +.* running ' "$work/list.txt" || fail "compose: $(cat "$work/list.txt")"
curl -fsS http://127.0.0.1:50053/metrics | grep -qE '^virtgate_libvirt_up\{.*\} 1$' \
  || fail "compose: /metrics on 127.0.0.1:50053 does not say libvirt is up"
compose exec libvirtd virsh -q -c 'test+unix:///default?socket=/run/libvirt/libvirt-sock' \
  suspend test >/dev/null 2>&1 || fail "compose exec virsh suspend test"
wait_for sh -c "'$virtgatectl' --server=127.0.0.1:50051 list | grep -qE '^test +.* paused '" \
  || fail "compose: the suspend did not show"
echo "PASS"
