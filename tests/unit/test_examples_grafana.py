"""The Grafana dashboard and the metrics docs/contract.md names, against what the receiver
exports."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.support.deployment import (
    CONTRACT_METRICS,
    EXAMPLES,
    TARGET_LABELS,
)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / "grafana-dashboard.json").read_text()))


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def test_the_contract_s_metrics_are_exported_by_the_receiver(exported: dict[str, set[str]]
                                                             ) -> None:
    assert set(exported) >= CONTRACT_METRICS, sorted(CONTRACT_METRICS - set(exported))
    assert "trigger" in exported["hotswap_model_reloads_total"]
    assert "outcome" in exported["hotswap_webhook_requests_total"]
    assert "model" in exported["hotswap_model_version"]


def test_dashboard_queries_only_metrics_and_labels_the_receiver_exports(
        dashboard: dict[str, Any], exported: dict[str, set[str]]) -> None:
    exprs = dashboard_exprs(dashboard)
    assert exprs
    for expr in exprs:
        names = set(re.findall(r"\bhotswap_\w+", expr))
        assert names, f"queries no hotswap_ metric: {expr}"
        unknown = names - set(exported)
        assert not unknown, f"{expr}: not exported by the receiver: {sorted(unknown)}"
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr))
        for group in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", expr):
            labels |= {label.strip() for label in group.split(",") if label.strip()}
        known = set().union(*(exported[name] for name in names)) | TARGET_LABELS
        assert labels <= known, f"{expr}: unknown labels {sorted(labels - known)}"


def test_dashboard_shows_every_exported_metric(dashboard: dict[str, Any],
                                               exported: dict[str, set[str]]) -> None:
    used = set(re.findall(r"\bhotswap_\w+", " ".join(dashboard_exprs(dashboard))))
    families = {re.sub(r"_(total|created|bucket|sum|count)$", "", name) for name in exported}
    shown = {re.sub(r"_(total|created|bucket|sum|count)$", "", name) for name in used}
    assert families <= shown, f"not on the dashboard: {sorted(families - shown)}"
    # p50 and p99 of prediction latency, as the dashboard promises.
    latency = [e for e in dashboard_exprs(dashboard) if "prediction_duration_seconds_bucket" in e]
    assert any("0.5," in e for e in latency) and any("0.99," in e for e in latency)


def test_dashboard_is_well_formed_for_import_and_provisioning(dashboard: dict[str, Any]) -> None:
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}" and "datasource" in variables
            assert panel["targets"] and all(t["refId"] for t in panel["targets"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
    assert dashboard["uid"] and dashboard["title"]
