"""examples/k8s/kserve/, checked against the receiver its predictor pods run (KServe can't run
here): the runtime speaks V2 on the port KServe sends to, its probes are the receiver's own V2
health routes, and the plugin's headless Service reaches every predictor pod."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from examples import train_model
from tests.support.deployment import (
    K8S,
    check_environment_is_read,
    plugin_settings,
    receiver_settings,
    run_receiver_main,
)

KSERVE = K8S / "kserve"
# KServe's labels on predictor pods, and the port it sends predictor traffic to.
ISVC_LABEL = "serving.kserve.io/inferenceservice"
KSERVE_PORT = 8080


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object the kustomization applies, by (kind, name), and the Secrets they use."""
    kustomization = yaml.safe_load((KSERVE / "kustomization.yaml").read_text())
    on_disk = {p.name for p in KSERVE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in [*sorted(on_disk), "../secret.yaml"]:
        for doc in yaml.safe_load_all((KSERVE / name).read_text()):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def runtime_container(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    (container,) = objects[("ServingRuntime", "mlflow-hotswap")]["spec"]["containers"]
    return dict(container)


def predictor_env(objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    """The predictor container's environment as KServe builds it: the runtime's, with the
    InferenceService's model env on top, Secret references resolved."""
    model = objects[("InferenceService", "fraud-detection")]["spec"]["predictor"]["model"]
    env: dict[str, str] = {}
    for item in [*runtime_container(objects)["env"], *model.get("env", [])]:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        env[item["name"]] = objects[("Secret", ref["name"])]["stringData"][ref["key"]]
    return env


def test_the_inference_service_runs_on_the_runtime_with_the_v2_protocol(
        objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    runtime = objects[("ServingRuntime", "mlflow-hotswap")]["spec"]
    model = objects[("InferenceService", "fraud-detection")]["spec"]["predictor"]["model"]
    assert runtime["protocolVersions"] == ["v2"] and model["protocolVersion"] == "v2"
    assert model["runtime"] == "mlflow-hotswap"
    assert model["modelFormat"] in [{"name": f["name"], "version": f["version"]}
                                    for f in runtime["supportedModelFormats"]]
    assert "storageUri" not in model  # the receiver follows the registry itself


def test_the_runtime_starts_the_receiver_on_kserves_port(
        objects: dict[tuple[str, str], dict[str, Any]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    container = runtime_container(objects)
    assert container["name"] == "kserve-container"
    started = run_receiver_main(container["command"], predictor_env(objects), tmp_path,
                                monkeypatch)
    assert started["port"] == KSERVE_PORT
    assert [p["containerPort"] for p in container["ports"]] == [KSERVE_PORT]
    annotations = objects[("ServingRuntime", "mlflow-hotswap")]["spec"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == str(KSERVE_PORT)
    assert annotations["prometheus.kserve.io/path"] == "/metrics"


def test_the_probes_are_the_receivers_v2_health_routes(
        objects: dict[tuple[str, str], dict[str, Any]], routes: dict[str, set[str]]) -> None:
    container = runtime_container(objects)
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert "GET" in routes[get["path"]] and get["port"] == KSERVE_PORT


def test_the_predictor_environment_is_what_the_receiver_reads(
        objects: dict[tuple[str, str], dict[str, Any]], routes: dict[str, set[str]]) -> None:
    env = predictor_env(objects)
    settings, read = receiver_settings(env)
    check_environment_is_read(env, read)
    assert settings.model_names == (train_model.DEFAULT_MODEL_NAME,)
    assert settings.webhook_secret
    assert "POST" in routes["/v2/models/{name}/infer"]


def test_the_headless_service_reaches_every_predictor_pod_for_the_plugin(
        objects: dict[tuple[str, str], dict[str, Any]], routes: dict[str, set[str]]) -> None:
    headless = objects[("Service", "fraud-detection-predictor-hotswap")]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"]
    assert headless["selector"] == {ISVC_LABEL: "fraud-detection", "component": "predictor"}
    (port,) = headless["ports"]
    assert port["port"] == port["targetPort"] == KSERVE_PORT
    # The targets the kustomization tells the MLflow server to notify, read by the plugin.
    comment = (KSERVE / "kustomization.yaml").read_text()
    (targets,) = re.findall(r"HOTSWAP_TARGETS=(\S+)", comment)
    settings, _ = plugin_settings({"HOTSWAP_TARGETS": targets,
                                   "HOTSWAP_WEBHOOK_SECRET": "x"})
    ours = [urlsplit(t) for t in settings.targets
            if urlsplit(t).hostname == "fraud-detection-predictor-hotswap"]
    assert [(t.port, t.path) for t in ours] == [(KSERVE_PORT, "/webhooks/mlflow")]
    assert "POST" in routes["/webhooks/mlflow"]
