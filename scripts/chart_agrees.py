"""The chart's default rendering and deploy/operator describe the same operator.

Usage: chart_agrees.py CHART_YAML CARGO_TOML RENDERED RBAC_YAML DEPLOYMENT_YAML

Checks that the chart's appVersion is the operator crate's version, that the operator's
ClusterRole grants exactly the rules of deploy/operator/rbac.yaml, and that the operator
container's probes, security context and resources are deploy/operator/deployment.yaml's.
"""

import re
import sys

import yaml


def documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind, name_suffix=""):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(name_suffix)]
    if len(found) != 1:
        sys.exit(f"chart_agrees: expected one {kind} named *{name_suffix}, found {len(found)}")
    return found[0]


def main():
    chart_yaml, cargo_toml, rendered, rbac, deployment = sys.argv[1:6]
    with open(chart_yaml) as f:
        app_version = yaml.safe_load(f)["appVersion"]
    with open(cargo_toml) as f:
        crate_version = re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)
    if app_version != crate_version:
        sys.exit(f"chart_agrees: appVersion {app_version} is not the operator's {crate_version}")

    chart = documents(rendered)
    plain = documents(rbac) + documents(deployment)
    chart_rules = one(chart, "ClusterRole", "demeter-operator")["rules"]
    plain_rules = one(plain, "ClusterRole", "demeter-operator")["rules"]
    if chart_rules != plain_rules:
        sys.exit(
            "chart_agrees: the chart's ClusterRole rules differ from deploy/operator/rbac.yaml:\n"
            f"chart: {chart_rules}\nplain: {plain_rules}"
        )
    chart_container = one(chart, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    plain_container = one(plain, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    for field in ["livenessProbe", "readinessProbe", "securityContext", "resources"]:
        if chart_container[field] != plain_container[field]:
            sys.exit(
                f"chart_agrees: the operator container's {field} differs: "
                f"chart {chart_container[field]}, deploy/operator {plain_container[field]}"
            )
    print("chart_agrees: the chart and deploy/operator agree")


main()
