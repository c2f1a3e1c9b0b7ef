#!/usr/bin/env bash
# The whole test suite: every Rust test of the workspace, then the chart's checks.
# Installs what it needs (helm, shellcheck, kubernetes-validate) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-tools.sh
export PATH="$PWD/.tools/bin:$PATH"
cargo test --workspace --all-targets
if [ -f scripts/test-chart.sh ]; then
  bash scripts/test-chart.sh
fi
