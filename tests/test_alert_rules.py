"""deploy/prometheus and deploy/grafana, offline: the rules pass promtool's check and unit tests, the
Prometheus Operator's objects agree with them and with the Deployment, the dashboard covers the service.

What the rules and the dashboard say about a live server is tests/live/test_prometheus.py's part.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import kubernetes_validate
import yaml

from chatsvc import admin
from chatsvc.testing import require_program
from tests import PROJECT_ROOT

PROMETHEUS = PROJECT_ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "chatsvc-rules.yaml"
RULE_TESTS = PROMETHEUS / "chatsvc-rules.test.yaml"
PROMETHEUS_RULE = PROMETHEUS / "prometheusrule.yaml"
DASHBOARD = PROJECT_ROOT / "deploy" / "grafana" / "chatsvc.json"
# What an operator must be paged or ticketed for, each by an alert of its own.
REQUIRED_ALERTS = {
    "ChatsvcHigh5xxRatio", "ChatsvcHighLatency", "ChatsvcNotReady", "ChatsvcReadinessFlapping",
    "ChatsvcDatabaseUnavailable", "ChatsvcDbPoolSaturated", "ChatsvcRateLimitingSurge",
    "ChatsvcStreamFanoutLag", "ChatsvcPasswordHashQueueFull",
}
# What the dashboard shows, by the metric that shows it.
DASHBOARD_COVERS = {
    "requests": "chatsvc_http_requests_total", "latency": "chatsvc_http_request_duration_seconds_bucket",
    "pool": "chatsvc_db_pool_connections", "streams": "chatsvc_streams_open",
    "fan-out": "chatsvc_stream_fanout_lag_seconds_bucket", "logins": "chatsvc_logins_total",
    "rate limiting": "chatsvc_rate_limited_total", "hashing": "chatsvc_password_hash_queue_depth",
}
OPERATOR_KINDS = {"PodMonitor", "PrometheusRule"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_program("promtool", "prometheus"), *args], capture_output=True,
                          text=True, timeout=60, cwd=PROMETHEUS, check=False)


def alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def test_promtool_accepts_the_rules():
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_promtool_unit_tests_of_the_rules_pass():
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_each_alert_is_unit_tested_where_it_fires_and_where_it_must_not():
    shipped = alerts()
    assert shipped.keys() >= REQUIRED_ALERTS, REQUIRED_ALERTS - shipped.keys()
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == shipped.keys(), f"alerts never seen firing: {shipped.keys() - fires}"
    assert quiet == shipped.keys(), f"alerts never seen quiet: {shipped.keys() - quiet}"
    for name, rule in shipped.items():
        assert rule["labels"]["severity"] in ("page", "ticket"), name
        assert {"summary", "description"} <= rule["annotations"].keys(), name


def test_the_prometheus_rule_holds_the_rule_file_groups():
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"], \
        "deploy/prometheus/prometheusrule.yaml is stale: run `make prometheus-rule`"


def test_kustomize_renders_the_service_with_its_monitoring_objects():
    kubectl = require_program("kubectl", "kubernetes-client")
    rendered = subprocess.run([kubectl, "kustomize", str(PROMETHEUS)], capture_output=True, text=True,
                              timeout=60, check=False)
    assert rendered.returncode == 0, rendered.stderr
    docs = {doc["kind"]: doc for doc in yaml.safe_load_all(rendered.stdout) if doc}
    base = subprocess.run([kubectl, "kustomize", str(PROJECT_ROOT / "deploy" / "k8s")], capture_output=True,
                          text=True, timeout=60, check=True)
    base_kinds = {doc["kind"] for doc in yaml.safe_load_all(base.stdout) if doc}
    assert docs.keys() == base_kinds | OPERATOR_KINDS
    for kind, doc in docs.items():
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "chatsvc", kind
        if kind not in OPERATOR_KINDS:
            kubernetes_validate.validate(doc, "1.25.0", strict=True)
    # The PodMonitor scrapes the Deployment's pods, on the admin port, at the metrics route.
    pod = docs["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    monitor = docs["PodMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["port"] in {port["name"] for port in container["ports"]}
    assert endpoint["port"] == "admin" and endpoint["path"] in {route.path for route in admin.ROUTES}
    assert docs["PrometheusRule"]["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_the_dashboard_covers_the_service_from_the_chosen_data_source():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    exprs = " ".join(target["expr"] for panel in panels for target in panel["targets"])
    for what, metric in DASHBOARD_COVERS.items():
        assert metric in exprs, f"no panel shows {what} ({metric})"
    for panel in panels:
        assert panel["title"] and panel["targets"], panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert variables == {"datasource", "job", "instance"}
