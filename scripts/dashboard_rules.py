"""Writes every query of a Grafana dashboard as a Prometheus recording rule, so that
`promtool check rules` parses each one (a query with a syntax error would leave its panel
empty without a word).

Usage: dashboard_rules.py DASHBOARD_JSON OUT_RULES_YAML

Grafana's variables are replaced the way Grafana expands them for "All": `$namespace` and
`$run` by `.*`, `$__rate_interval` by `5m`, `$__interval` by `1m`.
"""

import json
import re
import sys

import yaml

VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$namespace": ".*",
    "$run": ".*",
}


def queries(node):
    """Every panel target's `expr`, wherever it is nested."""
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        for value in node.values():
            yield from queries(value)
    elif isinstance(node, list):
        for value in node:
            yield from queries(value)


def main():
    dashboard_path, out_path = sys.argv[1:3]
    with open(dashboard_path) as f:
        dashboard = json.load(f)
    rules = []
    for index, expr in enumerate(queries(dashboard.get("panels", []))):
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        left = re.findall(r"\$\{?\w+", expr)
        if left:
            sys.exit(f"dashboard_rules: query {index} uses variables this check does not know: {left}")
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    if len(rules) < 10:
        sys.exit(f"dashboard_rules: only {len(rules)} queries found in {dashboard_path}")
    with open(out_path, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    print(f"dashboard_rules: {len(rules)} queries")


main()
