#!/usr/bin/env bash
# Validates deploy/ offline (no cluster here):
#
# 1. every built-in Kubernetes object in deploy/ (each file on its own, then the whole
#    kustomize build) against the API schemas of the oldest and newest Kubernetes versions
#    below, in strict mode (unknown fields fail), with kubernetes-validate from PyPI;
# 2. the policy TOML of the ConfigMap with `rotor check`: deploy/config/rotor.toml and the
#    copy inside the rendered ConfigMap;
# 3. the example workload with its agent sidecar (deploy/examples/, a kustomize base of its
#    own): its files are among the source files of step 1, then its kustomize build is
#    validated the same way, and its agent config is checked with `rotor check` once the
#    binary has the `agent` command (said, never skipped silently, until then);
# 4. high availability in the rendered build: two replicas or more, RollingUpdate without a
#    surge, required anti-affinity across nodes, ROTOR_ADVERTISE_URL from the pod IP, the
#    key and tokens from the Secret rotor-keys (no claim), a PodDisruptionBudget with
#    minAvailable 1.
#
# Custom resources (SecretProviderClass, ServiceMonitor, PrometheusRule) have no schema
# here; tests/suite/deploy.rs checks their fields and their references to the other objects. An
# object of any other kind fails this script until someone adds a check for it.
#
# Idempotent: installs kubernetes-validate only when it is missing or another version.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VALIDATE_VERSION=1.37.0
KUBE_VERSIONS=(1.31.0 1.37.0)

if [[ "$(python3 -m kubernetes_validate --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]]; then
    python3 -m pip install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
# kubernetes-validate depends on PyYAML, which the splitter below uses too.
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check PyYAML

cargo build --locked --quiet --bin rotor
ROTOR=target/debug/rotor

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

checks=0

# Splits YAML streams into one file per built-in object under $2 and prints
# "<files> <objects> <built-in> <custom>". Fails on a document without apiVersion/kind and on
# a kind it does not know. With a third argument, also writes each ConfigMap's rotor.toml
# there.
split() {
    python3 - "$@" <<'PY'
import pathlib, sys, yaml

src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
toml_out = pathlib.Path(sys.argv[3]) if len(sys.argv) > 3 else None
out.mkdir(parents=True, exist_ok=True)
BUILT_IN = {"v1", "apps/v1", "policy/v1", "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1",
            "coordination.k8s.io/v1", "batch/v1", "autoscaling/v2"}
CUSTOM = {("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass"),
          ("monitoring.coreos.com/v1", "ServiceMonitor"),
          ("monitoring.coreos.com/v1", "PrometheusRule")}
# promtool's plain rules file and its unit tests sit beside the PrometheusRule; they are
# not Kubernetes objects (tests/suite/monitoring.rs runs promtool on them).
PROMTOOL_ONLY = ("monitoring/rules", "monitoring/tests")
files = [src] if src.is_file() else sorted(
    p for p in src.rglob("*.y*ml")
    if p.name != "kustomization.yaml"
    and not any(part in p.as_posix() for part in PROMTOOL_ONLY))
built_in = custom = 0
errors = []
for path in files:
    for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
        if doc is None:
            continue
        api, kind = doc.get("apiVersion"), doc.get("kind")
        name = (doc.get("metadata") or {}).get("name", "?")
        if not api or not kind:
            errors.append(f"{path} document {i}: no apiVersion or kind")
        elif api in BUILT_IN:
            built_in += 1
            target = out / f"{path.stem}.{i}.{kind.lower()}.{name}.yaml"
            target.write_text(yaml.safe_dump(doc, sort_keys=False))
            if toml_out is not None and kind == "ConfigMap" and "rotor.toml" in doc.get("data", {}):
                toml_out.write_text(doc["data"]["rotor.toml"])
        elif (api, kind) in CUSTOM:
            custom += 1
        else:
            errors.append(f"{path} document {i}: {api} {kind} is neither a known built-in "
                          "nor a custom resource with a structural test in tests/suite/deploy.rs")
if errors:
    sys.exit("\n".join(errors))
print(len(files), built_in + custom, built_in, custom)
PY
}

# Validates every file in $1 against every version; each object must be reported as passed
# (kubernetes-validate only warns, and exits 0, for a kind it has no schema for).
validate_dir() {
    local dir=$1 expected=$2 version log passed
    for version in "${KUBE_VERSIONS[@]}"; do
        log="$work/validate-$version.log"
        if ! python3 -m kubernetes_validate --strict -k "$version" "$dir"/*.yaml >"$log" 2>&1; then
            grep -v '^INFO' "$log" >&2
            echo "error: kubernetes-validate failed against $version" >&2
            exit 1
        fi
        passed=$(grep -c ' passed for resource ' "$log" || true)
        if [[ "$passed" != "$expected" ]]; then
            grep -v '^INFO' "$log" >&2
            echo "error: $passed of $expected objects passed against $version" >&2
            exit 1
        fi
        checks=$((checks + passed))
        echo "   kubernetes $version: $passed objects passed (strict)"
    done
}

echo "== deploy: source files"
read -r files objects built_in custom < <(split deploy "$work/files")
echo "   $files files, $objects objects: $built_in built-in, $custom custom resources"
validate_dir "$work/files" "$built_in"

echo "== deploy: rotor check"
"$ROTOR" check deploy/config/rotor.toml
checks=$((checks + 1))

echo "== deploy: kustomize build"
if ! command -v kubectl >/dev/null; then
    echo "error: kubectl not found; it renders the kustomize base (kubectl kustomize)" >&2
    exit 1
fi
base=deploy
# The alert rules come from the observability change; until it is merged the file is
# absent, and the build runs on a copy without it (said here, never skipped silently).
if [[ ! -f deploy/monitoring/prometheus-alerts.yaml ]]; then
    echo "   NOTE: deploy/monitoring/prometheus-alerts.yaml is absent: rendering without it"
    cp -r deploy "$work/base"
    sed -i '\#^  - monitoring/prometheus-alerts.yaml$#d' "$work/base/kustomization.yaml"
    base="$work/base"
fi
kubectl kustomize "$base" >"$work/rendered.yaml"
read -r _ r_objects r_built_in r_custom < <(split "$work/rendered.yaml" "$work/rendered" "$work/rendered.toml")
echo "   rendered $r_objects objects: $r_built_in built-in, $r_custom custom resources"
validate_dir "$work/rendered" "$r_built_in"
if [[ ! -s "$work/rendered.toml" ]]; then
    echo "error: the rendered ConfigMap has no rotor.toml" >&2
    exit 1
fi
"$ROTOR" check "$work/rendered.toml"
checks=$((checks + 1))

# What high availability needs, in what kubectl applies (tests/suite/deploy.rs checks the
# source files the same way, and that each check fails on a broken copy).
echo "== deploy: high availability in the rendered build"
python3 - "$work/rendered.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
def one(kind):
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]
errors = []
dep = one("Deployment")
spec = dep["spec"]
pod = spec["template"]["spec"]
labels = spec["template"]["metadata"]["labels"]
if spec.get("replicas", 1) < 2:
    errors.append(f"Deployment replicas {spec.get('replicas', 1)}: at least 2")
strategy = spec.get("strategy", {})
if strategy.get("type") != "RollingUpdate" or strategy.get("rollingUpdate", {}).get("maxSurge") != 0:
    errors.append("Deployment strategy must be RollingUpdate with maxSurge 0")
terms = pod.get("affinity", {}).get("podAntiAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", [])
if not any(t.get("topologyKey") == "kubernetes.io/hostname"
           and t.get("labelSelector", {}).get("matchLabels", {}).items() <= labels.items()
           for t in terms):
    errors.append("no required podAntiAffinity on kubernetes.io/hostname selecting rotor's pods")
env = {e["name"]: e for e in pod["containers"][0].get("env", [])}
if env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "status.podIP":
    errors.append("POD_IP must come from status.podIP")
if env.get("ROTOR_ADVERTISE_URL", {}).get("value") != "http://$(POD_IP):8080":
    errors.append("ROTOR_ADVERTISE_URL must be http://$(POD_IP):8080")
if not any(v.get("secret", {}).get("secretName") == "rotor-keys" for v in pod.get("volumes", [])):
    errors.append("no volume of the Secret rotor-keys (the key and tokens every replica shares)")
if [d for d in docs if d.get("kind") == "PersistentVolumeClaim"]:
    errors.append("a PersistentVolumeClaim: the replicas share no volume (the key comes from rotor-keys)")
pdb = one("PodDisruptionBudget")
if pdb["spec"].get("minAvailable") != 1:
    errors.append("PodDisruptionBudget minAvailable must be 1")
for e in errors:
    print(f"error: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
checks=$((checks + 1))
echo "   two replicas, RollingUpdate, anti-affinity, advertised URL, shared Secret, minAvailable 1"

echo "== deploy/examples: kustomize build"
kubectl kustomize deploy/examples >"$work/examples.yaml"
read -r _ e_objects e_built_in e_custom < <(split "$work/examples.yaml" "$work/examples")
echo "   rendered $e_objects objects: $e_built_in built-in, $e_custom custom resources"
validate_dir "$work/examples" "$e_built_in"

echo "== deploy/examples: rotor check agent.toml"
"$ROTOR" check deploy/examples/agent.toml
checks=$((checks + 1))

echo "deploy: $files files, $objects objects ($r_objects rendered, $e_objects in examples), $checks checks passed"
