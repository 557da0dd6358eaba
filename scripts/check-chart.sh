#!/usr/bin/env bash
# Checks charts/demeter-operator with the real Helm the bootstrap pins: lint (strict), render with
# the defaults and with every optional block on, validate what it renders against Kubernetes'
# schemas, unit-test the alerting rules and parse every dashboard query with promtool (Debian's
# prometheus package), refuse
# values of the wrong type or name, and agree with deploy/ (the CRD, the dashboard, the
# operator's RBAC and Deployment) and with the operator's version. Needs scripts/env.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
chart=charts/demeter-operator
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$DEMETER_HELM" lint --strict "$chart" --quiet
"$DEMETER_HELM" template demeter "$chart" --namespace demeter-system > "$out/default.yaml"
"$DEMETER_HELM" template demeter "$chart" --namespace demeter-system \
    --set monitoring.serviceMonitor.enabled=true,monitoring.podMonitor.enabled=true \
    --set monitoring.prometheusRule.enabled=true \
    --set dashboard.enabled=true,watchNamespace=ml > "$out/all.yaml"
# The monitoring.coreos.com kinds have no schema here (their CRDs are the Prometheus Operator's).
"$DEMETER_PYTHON" -m kubernetes_validate --kubernetes-version 1.33.0 --strict --quiet --no-warn \
    "$out/default.yaml" "$out/all.yaml"

# The alerting rules parse, and each alert fires when it should and not when it should not.
promtool check rules "$chart/alerts/demeter-rules.yaml" > /dev/null
(cd "$chart/alerts" && promtool test rules demeter-rules.test.yaml > /dev/null)
# Every query of the dashboard parses as PromQL.
"$DEMETER_PYTHON" scripts/dashboard_rules.py deploy/dashboards/demeter-operator.json \
    "$out/dashboard-rules.yaml" > /dev/null
promtool check rules "$out/dashboard-rules.yaml" > /dev/null

# values.schema.json is enforced: a wrong type and an unknown key are refused, naming them.
refused() {
    local expected=$1
    shift
    if "$DEMETER_HELM" template demeter "$chart" "$@" > /dev/null 2> "$out/error"; then
        echo "check-chart: helm template $* was accepted" >&2
        exit 1
    fi
    grep -q -- "$expected" "$out/error" || {
        echo "check-chart: helm template $* failed without naming $expected:" >&2
        cat "$out/error" >&2
        exit 1
    }
}
refused replicas --set replicas=two
refused logFormat --set logFormat=xml
refused replica --set replica=3

cmp deploy/crds/trainingruns.demeter.dev.yaml "$chart/crds/trainingruns.demeter.dev.yaml" || {
    echo "check-chart: $chart/crds differs from deploy/crds; copy it over" >&2
    exit 1
}
cmp deploy/dashboards/demeter-operator.json "$chart/dashboards/demeter-operator.json" || {
    echo "check-chart: $chart/dashboards differs from deploy/dashboards; copy it over" >&2
    exit 1
}
"$DEMETER_PYTHON" scripts/chart_agrees.py "$chart/Chart.yaml" operator/Cargo.toml \
    "$out/default.yaml" deploy/operator/rbac.yaml deploy/operator/deployment.yaml
