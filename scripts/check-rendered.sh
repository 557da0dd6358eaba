#!/usr/bin/env bash
# Renders every example TrainingRun with the operator built by `make lint` and validates the
# objects against Kubernetes' schemas (what `kubectl apply` would send). Needs scripts/env.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rendered=$(mktemp --suffix=.yaml)
trap 'rm -f "$rendered"' EXIT
for run in deploy/examples/trainingrun*.yaml; do
    "$CARGO_TARGET_DIR/debug/demeter-operator" render "$run" > "$rendered"
    "$DEMETER_PYTHON" -m kubernetes_validate --kubernetes-version 1.33.0 --strict --quiet "$rendered"
done
