#!/usr/bin/env bash
# The deployment's YAML, checked offline:
# - yamllint --strict (config .yamllint.yaml) on every YAML file under
#   deploy/ and tests/deploy/;
# - deploy/k8s/kustomization.yaml (only fields kustomize knows) and every
#   resource it lists, against Kubernetes' schemas (tests/deploy/validate_k8s.py,
#   Debian's python3-kubernetes models), plus what the Deploy issue demands:
#   the socket directory (hostPath type Directory) mounted read-only, gRPC
#   probes on the health port with the right services, the security context,
#   TLS from a Secret, an emptyDir TMPDIR, resources, both Services, the
#   NetworkPolicy, terminationGracePeriodSeconds above the shutdown grace;
#   and (Observability) the metrics port, its scrape annotations, and the
#   NetworkPolicy admitting Prometheus to it;
# - that the validator rejects what it should: each tests/deploy/k8s_bad/
#   file for the reason its "# expect:" line gives, and copies of deploy/k8s
#   each broken in one way;
# - deploy/compose*.yaml: only keys of the Compose Specification, named
#   volumes declared (Debian 12's podman-compose 1.0.3 has no `config`).
#   k8s_manifests_test.sh SOURCE_DIR
set -euo pipefail
src="$(cd "${1:-$(dirname "$0")/../..}" && pwd)"
py=/usr/bin/python3
validator="$src/tests/deploy/validate_k8s.py"

skip() {
  echo "SKIP: $1"
  # CI installed everything: there a skip is a broken machine (README "Tests").
  if [ "${VIRTGATE_NO_SKIPS:-}" = 1 ]; then echo "VIRTGATE_NO_SKIPS=1 makes a skip a failure"; exit 1; fi
  exit 77
}
command -v yamllint >/dev/null || skip "yamllint is missing (Debian package yamllint)"
"$py" -c 'import yaml' 2>/dev/null || skip "PyYAML is missing (Debian package python3-yaml)"
"$py" -c 'import kubernetes.client' 2>/dev/null ||
  skip "the Kubernetes client is missing (Debian package python3-kubernetes)"

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

echo "== yamllint"
mapfile -t yamls < <(find "$src/deploy" "$src/tests/deploy" -name '*.yaml' -o -name '*.yml' | sort)
yamllint --strict -c "$src/.yamllint.yaml" "${yamls[@]}" && echo "${#yamls[@]} files clean" ||
  fail "yamllint"

echo "== deploy/k8s against the schemas and the issue's demands"
"$py" "$validator" --kustomization "$src/deploy/k8s" || fail "deploy/k8s"

echo "== each bad fixture is rejected, for its reason"
for f in "$src"/tests/deploy/k8s_bad/*.yaml; do
  expect="$(sed -n 's/^# expect: //p' "$f")"
  [ -n "$expect" ] || { fail "$f has no '# expect:' line"; continue; }
  if out="$("$py" "$validator" "$f")"; then
    fail "$(basename "$f") was accepted"
  elif ! grep -qF -- "$expect" <<<"$out"; then
    fail "$(basename "$f") was rejected, but not with '$expect':"; echo "$out"
  else
    echo "rejected $(basename "$f"): $expect"
  fi
done

echo "== copies of deploy/k8s broken in one way are rejected"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# mutant NAME EXPECTED FILE SED_SCRIPT: a copy of deploy/k8s with FILE edited.
mutant() {
  local dir="$tmp/$1"
  cp -r "$src/deploy/k8s" "$dir"
  sed -i -e "$4" "$dir/$3"
  if cmp -s "$src/deploy/k8s/$3" "$dir/$3"; then fail "mutant $1: the edit changed nothing"; return; fi
  if out="$("$py" "$validator" --kustomization "$dir")"; then
    fail "mutant $1 was accepted"
  elif ! grep -qF -- "$2" <<<"$out"; then
    fail "mutant $1 was rejected, but not with '$2':"; echo "$out"
  else
    echo "rejected $1: $2"
  fi
}
mutant socket-file "must be type Directory, not 'Socket'" daemonset.yaml \
  's|path: /run/libvirt$|path: /run/libvirt/libvirt-sock-ro|; s|type: Directory|type: Socket|'
mutant liveness-on-api-port "livenessProbe asks port 50051" daemonset.yaml \
  '/livenessProbe:/,/port:/ s|port: 50052|port: 50051|'
mutant readiness-on-liveness-service "readinessProbe asks service ''" daemonset.yaml \
  's|service: virtgate.v1.Hypervisor|service: ""|'
mutant http-probe "unknown field 'path' in GRPCAction" daemonset.yaml \
  '/readinessProbe:/,/service:/ s|service: virtgate.v1.Hypervisor|path: /healthz|'
mutant writable-root "readOnlyRootFilesystem must be true" daemonset.yaml \
  's|readOnlyRootFilesystem: true|readOnlyRootFilesystem: false|'
mutant escalation "allowPrivilegeEscalation must be false" daemonset.yaml \
  's|allowPrivilegeEscalation: false|allowPrivilegeEscalation: true|'
mutant grace "terminationGracePeriodSeconds 10 must exceed" daemonset.yaml \
  's|terminationGracePeriodSeconds: 30|terminationGracePeriodSeconds: 10|'
mutant scrape-wrong-port "annotations must name the metrics port 50053" daemonset.yaml \
  's|prometheus.io/port: "50053"|prometheus.io/port: "50052"|'
mutant metrics-plaintext "needs VIRTGATE_METRICS_INSECURE=true" daemonset.yaml \
  '/name: VIRTGATE_METRICS_INSECURE/,/value:/ s|value: "true"|value: "false"|'
mutant metrics-closed "no ingress rule admits the metrics port" networkpolicy.yaml \
  's|- port: metrics|- port: grpc|'
mutant no-headless "no headless Service" service.yaml 's|clusterIP: None|clusterIP: ""|'
mutant kustomize-field "unknown field 'resource'" kustomization.yaml 's|^resources:|resource:|'
mutant missing-resource "resource 'netpol.yaml' is not a file" kustomization.yaml \
  's|networkpolicy.yaml|netpol.yaml|'

echo "== compose files (known keys, declared volumes)"
"$py" "$validator" --compose "$src"/deploy/compose*.yaml || fail "compose"
bad="$tmp/compose-bad.yaml"
sed 's|^    read_only: true|    readonly: true|' "$src/deploy/compose.yaml" >"$bad"
if out="$("$py" "$validator" --compose "$bad")"; then fail "a compose file with 'readonly' was accepted"
elif grep -qF "unknown key 'readonly'" <<<"$out"; then echo "rejected compose-bad: unknown key 'readonly'"
else fail "compose-bad rejected for another reason:"; echo "$out"; fi

if [ "$failures" -ne 0 ]; then echo "$failures check(s) failed"; exit 1; fi
echo "all deploy manifest checks passed"
