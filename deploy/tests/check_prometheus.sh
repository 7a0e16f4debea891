#!/usr/bin/env bash
# ctest deploy_promtool: the alert rules, their unit tests, the generated
# PrometheusRule and the local cluster's prometheus.yml.
#   deploy/tests/check_prometheus.sh [PROMTOOL]
set -euo pipefail
cd "$(dirname "$0")/../prometheus"
promtool=${1:-promtool}
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$promtool" check rules alerts.rules.yml
"$promtool" test rules tests.yml
"$py" make_prometheusrule.py --check

./render_config.sh "$tmp/prometheus.yml" GATEWAY_METRICS=127.0.0.1:8080 \
  INFERENCE_METRICS=127.0.0.1:9091 TRAINER_METRICS=127.0.0.1:9103 REGISTRY_METRICS=127.0.0.1:9092 \
  PROMETHEUS=127.0.0.1:9090 RULES_DIR="$PWD"
"$promtool" check config "$tmp/prometheus.yml"
# A placeholder left without a value must be refused.
if ./render_config.sh "$tmp/bad.yml" GATEWAY_METRICS=127.0.0.1:8080 2>"$tmp/err"; then
  echo "render_config.sh accepted missing placeholders" >&2
  exit 1
fi
grep -q 'no value for' "$tmp/err"

# The dashboard's queries parse as PromQL: each becomes a recording rule (Grafana's
# variables replaced by values) that promtool checks.
"$py" - "$tmp/dashboard.rules.yml" <<'PY'
import json, sys
import yaml
dash = json.load(open("../grafana/skinlesion-dashboard.json"))
exprs = []
def walk(panels):
    for p in panels:
        exprs.extend((p["title"], t["expr"]) for t in p.get("targets", []) if t.get("expr"))
        walk(p.get("panels", []))
walk(dash["panels"])
subst = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$model": ".*"}
rules = []
for i, (title, expr) in enumerate(exprs):
    for k, v in subst.items():
        expr = expr.replace(k, v)
    if "$" in expr:
        sys.exit(f"dashboard panel '{title}': unknown variable in {expr}")
    rules.append({"record": f"dashboard:query_{i}", "expr": expr})
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
print(f"{len(rules)} dashboard queries")
PY
"$promtool" check rules "$tmp/dashboard.rules.yml"

# Every alert has a unit test in tests.yml and a section in docs/operations.md.
"$py" - <<'PY'
import pathlib, re, sys
import yaml
rules = yaml.safe_load(open("alerts.rules.yml"))
tests = yaml.safe_load(open("tests.yml"))
ops = pathlib.Path("../../docs/operations.md").read_text()
tested = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
          if t.get("exp_alerts")}
headings = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.*)$", ops, re.M)}
bad = []
for group in rules["groups"]:
    for rule in group["rules"]:
        name = rule.get("alert")
        if not name:
            continue
        if name not in tested:
            bad.append(f"alert {name} has no firing case in tests.yml")
        anchor = rule["annotations"].get("runbook", "").split("#")[-1]
        if anchor != name.lower() or anchor not in headings:
            bad.append(f"alert {name}: runbook anchor '{anchor}' is not a heading of docs/operations.md")
for b in bad:
    print("FAIL", b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
echo "deploy_promtool: rules, unit tests, PrometheusRule and prometheus.yml OK"
