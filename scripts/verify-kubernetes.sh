#!/usr/bin/env bash
# Check config/kubernetes/*.yaml, offline:
#  1. against the Kubernetes API schemas, strictly (an unknown or misspelt
#     field fails), for the oldest Kubernetes the manifests support (1.30: the
#     preStop sleep action) and the newest one the validator ships;
#  2. against forkhorn itself: the container's arguments parse (forkhorn
#     --print-config), the probes hit the --metrics-bind port, WEB_CONCURRENCY
#     comes from the CPU limit, terminationGracePeriodSeconds covers the
#     preStop sleep plus --graceful-timeout, and the Service finds the pods.
# Installs kubernetes-validate (PyPI; the JSON schemas are inside the package,
# nothing is downloaded while validating) into scripts/.venv. Before trusting
# a pass, it makes sure the validator fails a manifest with a misspelt field.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=scripts/.venv
validator="$venv/bin/kubernetes-validate"
if ! "$validator" --version >/dev/null 2>&1; then
    echo "installing kubernetes-validate into $venv"
    # Debian's python3 keeps venv in a package of its own.
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" 2>/dev/null || {
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0'
fi
bin="$PWD/target/debug/forkhorn"
[ -x "$bin" ] || cargo build --quiet

manifests=(config/kubernetes/*.yaml)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# validate VERSION FILE...: strict schema check; a kind without a schema
# (a typo in kind or apiVersion) is only a warning to the tool, an error here.
validate() {
    local version=$1 out
    shift
    out=$("$validator" --strict --kubernetes-version "$version" "$@" 2>&1) || {
        echo "$out"
        return 1
    }
    if grep -q '^WARN' <<<"$out"; then
        echo "$out"
        return 1
    fi
}

sed 's/readinessProbe:/readinesProbe:/' config/kubernetes/deployment.yaml >"$dir/broken.yaml"
if validate 1.37.0 "$dir/broken.yaml" >/dev/null; then
    echo "verify-kubernetes: the validator accepted a misspelt field; it checks nothing"
    exit 1
fi

for version in 1.30.0 1.37.0; do
    validate "$version" "${manifests[@]}" || {
        echo "verify-kubernetes: config/kubernetes does not validate against Kubernetes $version"
        exit 1
    }
done

"$venv/bin/python" - "$bin" "${manifests[@]}" <<'EOF'
import subprocess
import sys
import tomllib

import yaml

forkhorn, paths = sys.argv[1], sys.argv[2:]
docs = [d for p in paths for d in yaml.safe_load_all(open(p)) if d]
by_kind = {d["kind"]: d for d in docs}
problems = []


def check(ok, msg):
    if not ok:
        problems.append(msg)


deployment, service = by_kind["Deployment"], by_kind["Service"]
pod = deployment["spec"]["template"]["spec"]
container = next(c for c in pod["containers"] if c["name"] == "forkhorn")
args = container.get("args", [])

# The arguments are forkhorn's: they parse, and this is what they resolve to.
run = subprocess.run([forkhorn, *args, "--print-config"], capture_output=True, text=True,
                     env={"WEB_CONCURRENCY": "2", "PATH": "/usr/bin:/bin"})
if run.returncode != 0:
    sys.exit(f"verify-kubernetes: forkhorn refuses the container's args {args}: {run.stderr.strip()}")
config = tomllib.loads(run.stdout)

ports = {p["name"]: p["containerPort"] for p in container["ports"]}


def port_of(ref):
    return ports.get(ref) if isinstance(ref, str) else ref


metrics_bind = config.get("metrics_bind")
check(metrics_bind is not None, "args: no --metrics-bind, so nothing answers /healthz")
metrics_port = int(metrics_bind.rsplit(":", 1)[1]) if metrics_bind else None
for bind in config.get("bind", []):
    check(int(bind.rsplit(":", 1)[1]) in ports.values(), f"--bind {bind}: no containerPort for it")

ready = container.get("readinessProbe", {}).get("httpGet", {})
check(ready.get("path") == "/healthz", "readinessProbe: must GET /healthz")
check(port_of(ready.get("port")) == metrics_port,
      f"readinessProbe: port {ready.get('port')} is not the --metrics-bind port {metrics_port}")
live = container.get("livenessProbe", {}).get("httpGet", {})
check(port_of(live.get("port")) == metrics_port, "livenessProbe: must ask the master on the --metrics-bind port")

env = {e["name"]: e for e in container.get("env", [])}
ref = env.get("WEB_CONCURRENCY", {}).get("valueFrom", {}).get("resourceFieldRef", {})
check(ref.get("resource") == "limits.cpu", "WEB_CONCURRENCY must come from resourceFieldRef limits.cpu")
check("limits" in container.get("resources", {}) and "cpu" in container["resources"]["limits"],
      "resources.limits.cpu must be set, or WEB_CONCURRENCY is the node's CPU count")
check(not any(a in ("-w", "--workers") or a.startswith("--workers=") for a in args),
      "args: -w/--workers would override WEB_CONCURRENCY")

graceful = float(config["graceful_timeout"])
pre_stop = container.get("lifecycle", {}).get("preStop", {})
sleep_s = pre_stop.get("sleep", {}).get("seconds", 0)
check(sleep_s >= 3, "lifecycle.preStop: sleep at least 3 s so endpoints update before TERM")
grace = pod.get("terminationGracePeriodSeconds", 30)
check(grace >= sleep_s + graceful + 2,
      f"terminationGracePeriodSeconds {grace} < preStop {sleep_s} s + --graceful-timeout {graceful:g} s + 2 s margin")

labels = deployment["spec"]["template"]["metadata"]["labels"]
selector = service["spec"]["selector"]
check(all(labels.get(k) == v for k, v in selector.items()), f"Service selector {selector} matches no pod label")
for p in service["spec"]["ports"]:
    check(port_of(p["targetPort"]) in ports.values(), f"Service port {p['name']}: targetPort {p['targetPort']} is no containerPort")

if problems:
    print("verify-kubernetes: config/kubernetes/deployment.yaml and service.yaml disagree with forkhorn:")
    for p in problems:
        print("  - " + p)
    sys.exit(1)
print(f"verify-kubernetes: forkhorn accepts the container's args; grace {grace} s covers preStop {sleep_s} s "
      f"+ graceful {graceful:g} s; probes on the metrics port {metrics_port}")
EOF
echo "verify-kubernetes: ${manifests[*]} pass kubernetes-validate --strict (1.30 and 1.37) and the forkhorn checks"
