"""examples/k8s/, checked against the code its pods run (Kubernetes can't run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from mlflow.server.security_utils import is_allowed_host_header

from examples import train_model
from tests.support.deployment import (
    K8S,
    RECEIVER_COMMAND,
    ROOT,
    check_environment_is_read,
    check_registry_uri,
    check_webhook_target,
    parse_mlflow_server,
    parse_rollout,
    plugin_settings,
    receiver_settings,
    run_receiver_main,
)


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object kustomization.yaml applies, by (kind, name); plus train-job.yaml."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk - listed == {"train-job.yaml", "rollout-job.yaml"}, (
        "every manifest but the Jobs is applied")
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for name in sorted(on_disk):
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"duplicate {key}"
            objects[key] = doc
    return objects


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(container)


def k8s_env(container: dict[str, Any],
            objects: dict[tuple[str, str], dict[str, Any]]) -> dict[str, str]:
    """The container's environment with Secret references resolved, as the kubelet would."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        secret = objects.get(("Secret", ref["name"]))
        data = (secret or {}).get("stringData", {})
        if ref["key"] in data:
            env[item["name"]] = str(data[ref["key"]])
        else:
            assert ref.get("optional"), f"{item['name']}: no key {ref['key']} in {ref['name']}"
    return env


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        assert port in {p["containerPort"] for p in container["ports"]}
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return int(number)


def check_service_targets(service_obj: dict[str, Any], workload: dict[str, Any]) -> int:
    """The Service selects the workload's pods; returns the container port it reaches."""
    labels = workload["spec"]["template"]["metadata"]["labels"]
    selector = service_obj["spec"]["selector"]
    assert selector.items() <= labels.items()
    assert selector.items() <= workload["spec"]["selector"]["matchLabels"].items()
    (port,) = service_obj["spec"]["ports"]
    return port_number(only_container(workload), port["targetPort"])


def test_k8s_receiver_deployment_runs_three_replicas_of_the_console_script(
        k8s: dict[tuple[str, str], dict[str, Any]], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = k8s[("Deployment", "hotswap-receiver")]
    container = only_container(deployment)

    assert deployment["spec"]["replicas"] == 3
    assert container["command"] == RECEIVER_COMMAND
    started = run_receiver_main(container["command"], k8s_env(container, k8s), tmp_path,
                                monkeypatch)
    assert port_number(container, "http") == started["port"] == 8000


def test_k8s_receiver_probes_use_the_health_routes(
        k8s: dict[tuple[str, str], dict[str, Any]], routes: dict[str, set[str]]) -> None:
    container = only_container(k8s[("Deployment", "hotswap-receiver")])

    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert "GET" in routes[get["path"]], f"{probe}: no route {get['path']}"
        assert port_number(container, get["port"]) == 8000


def test_k8s_receiver_environment_is_what_the_receiver_reads(
        k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    env = k8s_env(only_container(k8s[("Deployment", "hotswap-receiver")]), k8s)

    settings, read = receiver_settings(env)
    check_environment_is_read(env, read)
    assert settings.model_names == (train_model.DEFAULT_MODEL_NAME,)
    assert settings.webhook_secret and settings.admin_token
    tracking = urlsplit(settings.tracking_uri)
    mlflow_service = k8s[("Service", "mlflow-server")]
    assert tracking.hostname == "mlflow-server"
    assert tracking.port == mlflow_service["spec"]["ports"][0]["port"]


def test_k8s_services_headless_for_fan_out_and_normal_for_predictions(
        k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    deployment = k8s[("Deployment", "hotswap-receiver")]
    headless = k8s[("Service", "hotswap-receiver-headless")]
    normal = k8s[("Service", "hotswap-receiver")]

    assert headless["spec"]["clusterIP"] == "None"
    assert normal["spec"].get("clusterIP") in (None, "")
    assert check_service_targets(headless, deployment) == 8000
    assert check_service_targets(normal, deployment) == 8000
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8000"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_k8s_mlflow_server_notifies_the_headless_service_with_the_shared_secret(
        k8s: dict[tuple[str, str], dict[str, Any]], routes: dict[str, set[str]]) -> None:
    server_env = k8s_env(only_container(k8s[("Deployment", "mlflow-server")]), k8s)
    receiver_env = k8s_env(only_container(k8s[("Deployment", "hotswap-receiver")]), k8s)

    settings, read = plugin_settings(server_env)
    check_environment_is_read(server_env, read)
    headless = k8s[("Service", "hotswap-receiver-headless")]
    check_webhook_target(settings, headless["metadata"]["name"],
                         headless["spec"]["ports"][0]["port"], routes)
    assert settings.secret and settings.secret == receiver_env["HOTSWAP_WEBHOOK_SECRET"]


def test_k8s_mlflow_server_uses_the_plugin_and_admits_its_clients(
        k8s: dict[tuple[str, str], dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = k8s[("Deployment", "mlflow-server")]
    container = only_container(deployment)
    env = k8s_env(container, k8s)
    params = parse_mlflow_server(container["command"], env, monkeypatch)

    registry = urlsplit(check_registry_uri(params).removeprefix("hotswap+"))
    postgres = k8s[("Service", "postgres")]
    assert (registry.hostname, registry.port) == ("postgres", postgres["spec"]["ports"][0]["port"])
    assert check_service_targets(postgres, k8s[("StatefulSet", "postgres")]) == 5432
    postgres_env = k8s_env(only_container(k8s[("StatefulSet", "postgres")]), k8s)
    assert registry.password == postgres_env["POSTGRES_PASSWORD"]
    assert check_service_targets(k8s[("Service", "mlflow-server")], deployment) == params["port"]
    allowed = params["allowed_hosts"].split(",")
    clients = [k8s[("Deployment", "hotswap-receiver")], k8s[("Job", "train-fraud-model")],
               k8s[("Job", "rollout-fraud-model")]]
    for client in clients:
        netloc = urlsplit(k8s_env(only_container(client), k8s)["MLFLOW_TRACKING_URI"]).netloc
        assert is_allowed_host_header(allowed, netloc), f"Host {netloc} refused"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"


def test_k8s_train_job_runs_train_model() -> None:
    job = yaml.safe_load((K8S / "train-job.yaml").read_text())
    python, script, *args = only_container(job)["command"]

    assert python == "python" and (ROOT / script).is_file()
    assert train_model.parse_args(args).promote


def test_k8s_rollout_job_steps_the_receivers_canary_through_every_pod(
        k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    job = k8s[("Job", "rollout-fraud-model")]
    args = parse_rollout(only_container(job)["command"])
    receiver_env = k8s_env(only_container(k8s[("Deployment", "hotswap-receiver")]), k8s)
    settings, _ = receiver_settings(receiver_env)

    assert args.name == receiver_env["MODEL_NAME"]
    # The receivers' canary is the rollout's, with its share from the registry.
    assert settings.canary is not None and str(settings.canary.reference) == args.canary
    assert settings.canary.percent is None
    assert args.promote_stage == receiver_env["MODEL_STAGE"]
    (receivers,) = args.receivers
    headless = k8s[("Service", "hotswap-receiver-headless")]
    url = urlsplit(receivers)
    assert (url.hostname, url.port) == (headless["metadata"]["name"],
                                        headless["spec"]["ports"][0]["port"])
    # A rolled-back rollout fails the Job once; it must not run again by itself.
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
