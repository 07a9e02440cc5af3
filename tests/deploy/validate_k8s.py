#!/usr/bin/python3
"""Offline checks of Kubernetes manifests, against the API's own schemas.

    validate_k8s.py --kustomization DIR   # DIR/kustomization.yaml, every
                                          # resource it lists, and what the
                                          # Deploy issue demands of them
    validate_k8s.py FILE...               # the schema check alone
    validate_k8s.py --compose FILE...     # compose files: known keys only,
                                          # named volumes declared

The schemas are the models of Debian's python3-kubernetes (22.6, the
Kubernetes 1.22 API): every model class names its fields and their types
(`openapi_types`, keyed by Python name) and their names in YAML
(`attribute_map`). Each document is walked against them: an unknown field, a
value of the wrong type, or a missing required field (the generated
constructors raise ValueError for one) is an error naming its path. One field
is added by hand, see GRPC_ACTION. Exit 0 when all is well, 1 with one line
per problem otherwise, 2 for a usage error.
"""
import datetime
import inspect
import os
import re
import sys

import yaml

try:
    import kubernetes.client as k8s
except ImportError:  # the shell test checks first and skips; say it anyway
    sys.exit("validate_k8s: python3-kubernetes is missing (Debian package python3-kubernetes)")

# The kinds the manifests may hold: (apiVersion, kind) -> model class.
KINDS = {
    ("v1", "Namespace"): k8s.V1Namespace,
    ("v1", "Service"): k8s.V1Service,
    ("v1", "ConfigMap"): k8s.V1ConfigMap,
    ("v1", "Secret"): k8s.V1Secret,
    ("v1", "ServiceAccount"): k8s.V1ServiceAccount,
    ("apps/v1", "DaemonSet"): k8s.V1DaemonSet,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.V1NetworkPolicy,
}


class GRPCAction:
    """ADDED BY HAND: Kubernetes 1.22's V1Probe has no `grpc`. Native gRPC
    probes came in 1.23 (alpha), were on by default from 1.24 and GA in 1.27
    as GRPCAction {port: int32, required; service: string}. This is that
    model and nothing else; it is attached to V1Probe in EXTRA_FIELDS."""
    openapi_types = {"port": "int", "service": "str"}
    attribute_map = {"port": "port", "service": "service"}

    def __init__(self, port=None, service=None):
        if port is None:
            raise ValueError("Invalid value for `port`, must not be `None`")
        self.port, self.service = port, service


# Fields a model lacks in 1.22 but the manifests use: model -> {python name:
# (YAML name, type)}. Only the gRPC probe (see GRPCAction).
EXTRA_FIELDS = {k8s.V1Probe: {"grpc": ("grpc", "GRPCAction")}}
EXTRA_MODELS = {"GRPCAction": GRPCAction}

PRIMITIVES = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "date": (str, datetime.date),
    "datetime": (str, datetime.datetime),
}


class Problems(list):
    def add(self, where, what):
        self.append(f"{where}: {what}")


def model_class(name):
    return EXTRA_MODELS.get(name) or getattr(k8s, name, None)


def check(value, type_name, where, problems):
    """Checks `value` against `type_name` (an openapi_types string) and
    returns what the model constructor takes (a model object, or the value
    itself), or None after recording a problem."""
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        if not isinstance(value, list):
            problems.add(where, f"must be a list, not {type(value).__name__}")
            return None
        return [check(v, m.group(1), f"{where}[{i}]", problems) for i, v in enumerate(value)]
    m = re.fullmatch(r"dict\(str, (.+)\)", type_name)
    if m:
        if not isinstance(value, dict):
            problems.add(where, f"must be a map, not {type(value).__name__}")
            return None
        return {k: check(v, m.group(1), f"{where}.{k}", problems) for k, v in value.items()}
    if type_name == "object":  # int-or-string and free-form fields
        return value
    if type_name in PRIMITIVES:
        # bool is an int in Python; YAML's `true` is no port number.
        if (not isinstance(value, PRIMITIVES[type_name])
                or (isinstance(value, bool) and type_name != "bool")):
            problems.add(where, f"must be {type_name}, not {type(value).__name__} ({value!r})")
            return None
        return value
    klass = model_class(type_name)
    if klass is None:
        problems.add(where, f"validator does not know type {type_name}")
        return None
    if not isinstance(value, dict):
        problems.add(where, f"must be a map ({type_name}), not {type(value).__name__}")
        return None
    fields = {yaml_name: (py, t) for py, t in klass.openapi_types.items()
              for yaml_name in [klass.attribute_map[py]]}
    extra = {yaml_name: (py, t) for py, (yaml_name, t) in EXTRA_FIELDS.get(klass, {}).items()}
    kwargs, before = {}, len(problems)
    for key, v in value.items():
        if key in fields:
            py, t = fields[key]
            kwargs[py] = check(v, t, f"{where}.{key}", problems)
        elif key in extra:
            check(v, extra[key][1], f"{where}.{key}", problems)
        else:
            problems.add(where, f"unknown field {key!r} in {type_name}")
    if len(problems) > before:
        return None
    # The generated constructor runs the model's own checks: required fields
    # (ValueError "Invalid value for `x`, must not be `None`") and enums.
    try:
        if klass is GRPCAction:
            return klass(**kwargs)
        return klass(local_vars_configuration=CONFIG, **kwargs)
    except ValueError as e:
        problems.add(where, f"{type_name}: {e}")
        return None
    except TypeError as e:
        problems.add(where, f"{type_name}: {e}")
        return None


CONFIG = k8s.Configuration()
CONFIG.client_side_validation = True


def load(path, problems):
    try:
        with open(path) as f:
            return [d for d in yaml.safe_load_all(f) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        problems.add(path, f"cannot read: {e}")
        return []


def check_document(doc, where, problems):
    if not isinstance(doc, dict):
        problems.add(where, "not a map")
        return
    key = (doc.get("apiVersion"), doc.get("kind"))
    klass = KINDS.get(key)
    if klass is None:
        problems.add(where, f"apiVersion/kind {key[0]}/{key[1]} is not one this validator knows")
        return
    if not isinstance(doc.get("metadata"), dict) or not doc["metadata"].get("name"):
        problems.add(where, "metadata.name is missing")
    check(doc, klass.__name__, f"{where}({key[1]})", problems)


# Kustomization (kustomize v5, kustomize.config.k8s.io/v1beta1): its fields,
# and the fields of the entries this repository uses.
KUSTOMIZATION_FIELDS = {
    "apiVersion", "kind", "metadata", "resources", "components", "crds",
    "namespace", "namePrefix", "nameSuffix", "labels", "commonLabels",
    "commonAnnotations", "images", "replicas", "patches", "replacements",
    "configMapGenerator", "secretGenerator", "generatorOptions", "generators",
    "transformers", "validators", "configurations", "openapi", "helmCharts",
    "helmGlobals", "buildMetadata", "sortOptions",
    # deprecated in kustomize v5, still read
    "bases", "patchesStrategicMerge", "patchesJson6902", "vars", "imageTags",
}
ENTRY_FIELDS = {
    "images": {"name", "newName", "newTag", "digest", "tagSuffix"},
    "labels": {"pairs", "includeSelectors", "includeTemplates", "fields"},
    "configMapGenerator": {"name", "namespace", "behavior", "files", "literals",
                           "envs", "env", "options"},
    "secretGenerator": {"name", "namespace", "behavior", "files", "literals",
                        "envs", "env", "options", "type"},
}


def check_kustomization(directory, problems):
    path = os.path.join(directory, "kustomization.yaml")
    docs = load(path, problems)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        problems.add(path, "must hold one map")
        return None, []
    kust = docs[0]
    if kust.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or kust.get("kind") != "Kustomization":
        problems.add(path, "apiVersion/kind must be kustomize.config.k8s.io/v1beta1 Kustomization")
    for key in kust:
        if key not in KUSTOMIZATION_FIELDS:
            problems.add(path, f"unknown field {key!r} (not a kustomize Kustomization field)")
    for key, allowed in ENTRY_FIELDS.items():
        for i, entry in enumerate(kust.get(key) or []):
            if not isinstance(entry, dict):
                problems.add(path, f"{key}[{i}] must be a map")
                continue
            for k in entry:
                if k not in allowed:
                    problems.add(path, f"{key}[{i}]: unknown field {k!r}")
    resources = kust.get("resources")
    if not isinstance(resources, list) or not resources:
        problems.add(path, "resources: must list the manifests")
        return kust, []
    objects = []
    for r in resources:
        rpath = os.path.join(directory, str(r))
        if not os.path.isfile(rpath):
            problems.add(path, f"resource {r!r} is not a file in {directory}")
            continue
        for i, doc in enumerate(load(rpath, problems)):
            check_document(doc, f"{rpath}#{i}", problems)
            if isinstance(doc, dict):
                objects.append((f"{rpath}#{i}", doc))
    return kust, objects


def seconds(duration):
    """virtgated's duration flags: 10s, 500ms, 1m, 1h, or combinations."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a duration: {duration!r}")
    return sum(float(n) * units[u] for n, u in parts)


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def check_properties(kust, objects, problems):
    """What the Deploy issue demands of the manifests."""
    by_kind = {}
    for where, doc in objects:
        by_kind.setdefault(doc.get("kind"), []).append((where, doc))
    for kind in ("Namespace", "DaemonSet", "Service", "NetworkPolicy"):
        if kind not in by_kind:
            problems.add("kustomization", f"no {kind} among the resources")
    images = {e.get("name") for e in (kust.get("images") or [])}
    for where, ds in by_kind.get("DaemonSet", []):
        check_daemonset(where, ds, images, problems)
        labels = ds["spec"]["template"]["metadata"].get("labels", {})
        services = by_kind.get("Service", [])
        for swhere, svc in services:
            sel = svc["spec"].get("selector") or {}
            if not sel or any(labels.get(k) != v for k, v in sel.items()):
                problems.add(swhere, f"selector {sel} does not pick the DaemonSet's pods {labels}")
        if not any(s["spec"].get("clusterIP") == "None" for _, s in services):
            problems.add(where, "no headless Service (clusterIP: None) reaches every node's virtgated")
        if not any(s["spec"].get("clusterIP") != "None" for _, s in services):
            problems.add(where, "no (non-headless) Service")
        for nwhere, np in by_kind.get("NetworkPolicy", []):
            sel = (np["spec"].get("podSelector") or {}).get("matchLabels") or {}
            if not sel or any(labels.get(k) != v for k, v in sel.items()):
                problems.add(nwhere, f"podSelector {sel} does not pick the DaemonSet's pods")
            admitted = {p.get("port") for rule in np["spec"].get("ingress") or []
                        for p in rule.get("ports") or []}
            if "metrics" not in admitted:
                problems.add(nwhere, "no ingress rule admits the metrics port: Prometheus "
                             "could not scrape")


def check_daemonset(where, ds, images, problems):
    pod = ds["spec"]["template"]["spec"]
    psc = pod.get("securityContext") or {}
    volumes = {v["name"]: v for v in pod.get("volumes") or []}

    # libvirtd's socket directory, never a socket file.
    for v in volumes.values():
        hp = v.get("hostPath")
        if hp is not None and hp.get("type") != "Directory":
            problems.add(where, f"hostPath volume {v['name']} ({hp.get('path')}) must be type "
                         f"Directory, not {hp.get('type', 'unset')!r}: mount libvirtd's socket "
                         "directory, never the socket file")
    libvirt = [n for n, v in volumes.items() if (v.get("hostPath") or {}).get("path") == "/run/libvirt"]
    if not libvirt:
        problems.add(where, "no hostPath volume of /run/libvirt (libvirtd's socket directory)")

    containers = [c for c in pod["containers"] if c["name"] == "virtgated"]
    if not containers:
        problems.add(where, "no container named virtgated")
        return
    c = containers[0]
    if c.get("image", "").rsplit(":", 1)[0] not in images:
        problems.add(where, f"image {c.get('image')!r} is not named in the kustomization's images:")
    env = {e["name"]: e.get("value") for e in c.get("env") or []}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
    for n in libvirt:
        m = [m for m in mounts.values() if m["name"] == n]
        if not m or m[0]["mountPath"] != "/run/libvirt" or not m[0].get("readOnly"):
            problems.add(where, "the socket directory must be mounted read-only at /run/libvirt")

    # Probes: native gRPC, on the health port, the right services.
    try:
        health = port_of(env["VIRTGATE_HEALTH_LISTEN"])
        api = port_of(env["VIRTGATE_LISTEN"])
    except (KeyError, ValueError, IndexError):
        problems.add(where, "VIRTGATE_LISTEN and VIRTGATE_HEALTH_LISTEN must both be HOST:PORT")
        health = api = None
    if health is not None and health == api:
        problems.add(where, "the health port must not be the API port")
    wanted = {"livenessProbe": "", "readinessProbe": "virtgate.v1.Hypervisor", "startupProbe": ""}
    for probe, service in wanted.items():
        p = c.get(probe)
        if p is None:
            if probe != "startupProbe":
                problems.add(where, f"{probe} is missing")
            continue
        g = p.get("grpc")
        if g is None or set(p) & {"httpGet", "tcpSocket", "exec"}:
            problems.add(where, f"{probe} must be a native gRPC probe (grpc:) only")
            continue
        if g.get("port") != health:
            problems.add(where, f"{probe} asks port {g.get('port')}, not the health port {health}")
        if g.get("service", "") != service:
            problems.add(where, f"{probe} asks service {g.get('service', '')!r}, not {service!r}")

    # Metrics: a port named metrics where VIRTGATE_METRICS_LISTEN serves,
    # which the scrape annotations name (Observability issue).
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    try:
        metrics = port_of(env["VIRTGATE_METRICS_LISTEN"])
    except (KeyError, ValueError, IndexError):
        problems.add(where, "VIRTGATE_METRICS_LISTEN must be HOST:PORT (virtgated's default is "
                     "loopback, which Prometheus cannot reach)")
        metrics = None
    if metrics is not None:
        if ports.get("metrics") != metrics:
            problems.add(where, f"no container port named metrics at {metrics} "
                         "(VIRTGATE_METRICS_LISTEN)")
        if metrics in (health, api):
            problems.add(where, "the metrics port must be a port of its own")
        if not env["VIRTGATE_METRICS_LISTEN"].startswith("127.") and \
                env.get("VIRTGATE_METRICS_INSECURE") != "true":
            problems.add(where, "a non-loopback VIRTGATE_METRICS_LISTEN needs "
                         "VIRTGATE_METRICS_INSECURE=true, or virtgated refuses to start")
        notes = ds["spec"]["template"]["metadata"].get("annotations") or {}
        if notes.get("prometheus.io/scrape") != "true" or \
                notes.get("prometheus.io/port") != str(metrics) or \
                notes.get("prometheus.io/path", "/metrics") != "/metrics":
            problems.add(where, "the pod template's prometheus.io/scrape, /port and /path "
                         f"annotations must name the metrics port {metrics} and /metrics")

    # Security context: container level, or inherited from the pod.
    csc = c.get("securityContext") or {}
    if not csc.get("readOnlyRootFilesystem"):
        problems.add(where, "readOnlyRootFilesystem must be true")
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.add(where, "allowPrivilegeEscalation must be false")
    if csc.get("privileged"):
        problems.add(where, "must not be privileged")
    caps = csc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
        problems.add(where, "capabilities: drop ALL and add none")
    if not csc.get("runAsNonRoot", psc.get("runAsNonRoot")):
        problems.add(where, "runAsNonRoot must be true")
    seccomp = csc.get("seccompProfile") or psc.get("seccompProfile") or {}
    if seccomp.get("type") != "RuntimeDefault":
        problems.add(where, "seccompProfile must be RuntimeDefault")

    # TLS from a Secret, and a writable TMPDIR beside a read-only root.
    secret_dirs = [m["mountPath"] for m in mounts.values()
                   if "secret" in volumes.get(m["name"], {})]
    for var in ("VIRTGATE_TLS_CERT", "VIRTGATE_TLS_KEY", "VIRTGATE_TLS_CLIENT_CA"):
        path = env.get(var)
        if not path or not any(path.startswith(d.rstrip("/") + "/") for d in secret_dirs):
            problems.add(where, f"{var} must name a file of a mounted Secret, not {path!r}")
    tmp = env.get("TMPDIR", "/tmp")
    if tmp not in mounts or "emptyDir" not in volumes.get(mounts[tmp]["name"], {}):
        problems.add(where, f"TMPDIR ({tmp}) must be an emptyDir (virtgated stages TLS copies there)")

    # Requests and limits set.
    res = c.get("resources") or {}
    for part, keys in (("requests", ("cpu", "memory")), ("limits", ("memory",))):
        for k in keys:
            if k not in (res.get(part) or {}):
                problems.add(where, f"resources.{part}.{k} is missing")

    # Kubelet's SIGKILL must come after virtgated's own grace.
    try:
        grace = seconds(env.get("VIRTGATE_SHUTDOWN_GRACE") or "10s")
    except ValueError as e:
        problems.add(where, str(e))
        grace = 10
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    if not tgps > grace:
        problems.add(where, f"terminationGracePeriodSeconds {tgps} must exceed the shutdown grace ({grace:g}s)")


# Compose files (the Compose Specification): the keys this repository may
# use. Debian 12's podman-compose (1.0.3) has no `config` command to check
# them with, so this is the check: a misspelt key is an error.
COMPOSE_TOP = {"version", "name", "services", "volumes", "networks", "configs", "secrets"}
COMPOSE_SERVICE = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "ports",
    "expose", "volumes", "tmpfs", "read_only", "user", "group_add", "cap_add",
    "cap_drop", "security_opt", "depends_on", "restart", "healthcheck", "networks",
    "network_mode", "profiles", "labels", "container_name", "hostname", "devices",
    "working_dir", "stop_grace_period", "stop_signal", "init", "mem_limit", "cpus",
    "logging", "ulimits", "userns_mode", "pid", "ipc", "privileged", "configs",
    "secrets", "deploy", "extra_hosts", "dns", "shm_size", "sysctls", "annotations",
}


def check_compose(path, problems):
    docs = load(path, problems)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        problems.add(path, "must hold one map")
        return
    doc = docs[0]
    for key in doc:
        if key not in COMPOSE_TOP and not str(key).startswith("x-"):
            problems.add(path, f"unknown top-level key {key!r}")
    declared = set((doc.get("volumes") or {}).keys())
    services = doc.get("services")
    if not isinstance(services, dict) or not services:
        problems.add(path, "services: none")
        return
    for name, svc in services.items():
        where = f"{path}: services.{name}"
        if not isinstance(svc, dict):
            problems.add(where, "must be a map")
            continue
        for key in svc:
            if key not in COMPOSE_SERVICE and not str(key).startswith("x-"):
                problems.add(where, f"unknown key {key!r}")
        if "image" not in svc and "build" not in svc:
            problems.add(where, "needs image or build")
        for dep in svc.get("depends_on") or []:
            if dep not in services:
                problems.add(where, f"depends_on names no service: {dep!r}")
        for v in svc.get("volumes") or []:
            source = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if source and not source.startswith(("/", ".", "~", "$")) and source not in declared:
                problems.add(where, f"volume {source!r} is not declared under top-level volumes")


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 2 if not argv else 0
    problems = Problems()
    if argv[0] == "--kustomization":
        if len(argv) != 2:
            print("usage: validate_k8s.py --kustomization DIR", file=sys.stderr)
            return 2
        kust, objects = check_kustomization(argv[1], problems)
        if kust is not None and not problems:
            check_properties(kust, objects, problems)
        what = f"{argv[1]}: kustomization and {len(objects)} object(s)"
    elif argv[0] == "--compose":
        for path in argv[1:]:
            check_compose(path, problems)
        what = f"{len(argv) - 1} compose file(s)"
    else:
        n = 0
        for path in argv:
            for i, doc in enumerate(load(path, problems)):
                check_document(doc, f"{path}#{i}", problems)
                n += 1
        what = f"{n} object(s)"
    for p in problems:
        print(p)
    print(f"validate_k8s: {what}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
