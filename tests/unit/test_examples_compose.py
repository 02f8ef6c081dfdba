"""examples/docker-compose.yml, checked against the code its containers run (no Docker here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from mlflow.server.security_utils import is_allowed_host_header

from examples import train_model
from tests.support.deployment import (
    EXAMPLES,
    PLUGIN_VARS,
    RECEIVER_COMMAND,
    RECEIVER_VARS,
    ROOT,
    check_environment_is_read,
    check_registry_uri,
    check_webhook_target,
    parse_mlflow_server,
    parse_rollout,
    plugin_settings,
    receiver_settings,
    run_receiver_main,
    service,
)


def container_ports(svc: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1]) for p in svc.get("ports", [])}


def healthcheck_url(svc: dict[str, Any]) -> str:
    test = svc["healthcheck"]["test"]
    text = test[-1] if isinstance(test, list) else test
    match = re.search(r"http://[^'\" ]+", text)
    assert match, f"no URL in healthcheck {test}"
    return match.group(0)


def test_compose_receiver_runs_the_console_script_on_its_published_port(
        compose: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = service(compose, "receiver")

    assert receiver["command"] == RECEIVER_COMMAND
    started = run_receiver_main(receiver["command"], receiver["environment"], tmp_path,
                                monkeypatch)
    assert (started["host"], started["port"]) == ("0.0.0.0", 8000)
    assert container_ports(receiver) == {8000}


def test_compose_receiver_environment_is_what_the_receiver_reads(
        compose: dict[str, Any]) -> None:
    env = service(compose, "receiver")["environment"]

    settings, read = receiver_settings(env)
    assert read >= RECEIVER_VARS, f"in the contract, never read: {sorted(RECEIVER_VARS - read)}"
    check_environment_is_read(env, read)
    assert settings.model_names == (train_model.DEFAULT_MODEL_NAME,)
    assert settings.stage == "Production" and settings.alias is None
    tracking = urlsplit(settings.tracking_uri)
    mlflow = service(compose, "mlflow")
    assert tracking.hostname == "mlflow" and tracking.port in container_ports(mlflow)


def test_compose_receiver_healthcheck_asks_the_readiness_route(
        compose: dict[str, Any], routes: dict[str, set[str]]) -> None:
    url = urlsplit(healthcheck_url(service(compose, "receiver")))

    assert url.path == "/health/ready" and "GET" in routes[url.path]
    assert url.port == 8000


def test_compose_mlflow_server_uses_the_plugin_on_postgres(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = service(compose, "mlflow")
    params = parse_mlflow_server(mlflow["command"], {}, monkeypatch)

    registry = urlsplit(check_registry_uri(params).removeprefix("hotswap+"))
    postgres_env = service(compose, "postgres")["environment"]
    assert registry.scheme == "postgresql"
    assert (registry.hostname, registry.port) == ("postgres", 5432)
    assert (registry.username, registry.password, registry.path) == (
        postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_PASSWORD"],
        "/" + postgres_env["POSTGRES_DB"])
    assert params["port"] in container_ports(mlflow)
    assert urlsplit(healthcheck_url(mlflow)).port == params["port"]
    # MLflow 3's Host-header guard must let the receiver and the trainer in.
    allowed = params["allowed_hosts"].split(",")
    for client in ("receiver", "trainer"):
        netloc = urlsplit(service(compose, client)["environment"]["MLFLOW_TRACKING_URI"]).netloc
        assert is_allowed_host_header(allowed, netloc), f"{client}: Host {netloc} refused"


def test_compose_plugin_notifies_the_receiver_webhook_with_the_shared_secret(
        compose: dict[str, Any], routes: dict[str, set[str]]) -> None:
    env = service(compose, "mlflow")["environment"]

    settings, read = plugin_settings(env)
    assert read >= PLUGIN_VARS
    check_environment_is_read(env, read)
    check_webhook_target(settings, "receiver", 8000, routes)
    receiver_env = service(compose, "receiver")["environment"]
    assert settings.secret and settings.secret == receiver_env["HOTSWAP_WEBHOOK_SECRET"]


def test_compose_prometheus_scrapes_every_receiver_replica(
        compose: dict[str, Any], routes: dict[str, set[str]]) -> None:
    prometheus = service(compose, "prometheus")
    source, target = next(v.split(":")[:2] for v in prometheus["volumes"]
                          if "prometheus.yml" in v)
    assert f"--config.file={target}" in prometheus["command"]
    config = yaml.safe_load((EXAMPLES / source).read_text())

    (job,) = config["scrape_configs"]
    assert "GET" in routes[job["metrics_path"]]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["receiver"] and discovery["port"] == 8000


def test_compose_grafana_provisions_prometheus_and_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = service(compose, "grafana")
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    for source in mounts:
        assert (EXAMPLES / source).exists(), source
    provisioning = EXAMPLES / next(s for s, t in mounts.items() if t == "/etc/grafana/provisioning")

    (datasource,) = yaml.safe_load(
        (provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    url = urlsplit(datasource["url"])
    prometheus_ports = container_ports(service(compose, "prometheus"))
    assert url.hostname == "prometheus" and url.port in prometheus_ports
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards" / "hotswap.yml").read_text())["providers"]
    dashboard_target = mounts["./grafana-dashboard.json"]
    assert Path(dashboard_target).parent == Path(provider["options"]["path"])


def test_compose_trainer_runs_train_model_against_the_server(compose: dict[str, Any]) -> None:
    trainer = service(compose, "trainer")
    python, script, *args = trainer["entrypoint"]

    assert python == "python" and (ROOT / script).is_file()
    parsed = train_model.parse_args([*args, *trainer["command"]])
    receiver_model = service(compose, "receiver")["environment"]["MODEL_NAME"]
    assert parsed.promote and parsed.model_name == receiver_model


def test_compose_services_depend_on_services_and_build_from_the_repository(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in services.items():
        for dependency in svc.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"
            wants_healthy = isinstance(svc["depends_on"], dict) and \
                svc["depends_on"][dependency]["condition"] == "service_healthy"
            if wants_healthy:
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck"
        if "build" in svc:
            context = (EXAMPLES / svc["build"]["context"]).resolve()
            assert context == ROOT and (context / svc["build"]["dockerfile"]).is_file()


def test_compose_rollout_steps_the_receivers_canary_through_every_replica(
        compose: dict[str, Any]) -> None:
    rollout = service(compose, "rollout")
    args = parse_rollout([*rollout["entrypoint"], *rollout["command"]])
    receiver = service(compose, "receiver")

    assert rollout["profiles"] == ["tools"]
    assert args.name == receiver["environment"]["MODEL_NAME"]
    assert args.promote_stage == receiver["environment"]["MODEL_STAGE"]
    settings, _ = receiver_settings(receiver["environment"])
    assert settings.canary is not None and str(settings.canary.reference) == args.canary
    assert settings.canary.percent is None
    (receivers,) = args.receivers
    assert urlsplit(receivers).hostname == "receiver"
    assert urlsplit(receivers).port in container_ports(receiver)
    # The tracking URI the receiver uses, which MLflow's Host-header guard admits (above).
    netloc = urlsplit(rollout["environment"]["MLFLOW_TRACKING_URI"]).netloc
    assert netloc == urlsplit(receiver["environment"]["MLFLOW_TRACKING_URI"]).netloc
