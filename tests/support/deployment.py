"""Parsing and checking helpers for the tests of examples/: the deployment files are parsed and
checked against the code that runs inside them (settings fed the files' environments, the
receiver's routes and metrics, `mlflow server`'s own option parser, setup.cfg's entry points)."""

from __future__ import annotations

import configparser
import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
import yaml
from mlflow.cli import server as mlflow_server_command
from prometheus_client.metrics import MetricWrapperBase
from starlette.routing import Route

from mlflow_hotswap_plugin.settings import Settings as PluginSettings
from receiver import accepting
from receiver.app import create_app
from receiver.metrics import Metrics
from receiver.settings import Settings as ReceiverSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
K8S = EXAMPLES / "k8s"

# docs/contract.md's tables: the contract the files are written against.
RECEIVER_VARS = {"MLFLOW_TRACKING_URI", "MODEL_NAME", "MODEL_STAGE", "MODEL_ALIAS",
                 "MODEL_CACHE_SIZE", "MODEL_UPDATE_INTERVAL", "HOTSWAP_WEBHOOK_SECRET",
                 "HOTSWAP_ADMIN_TOKEN"}
PLUGIN_VARS = {"HOTSWAP_TARGETS", "HOTSWAP_WEBHOOK_SECRET", "HOTSWAP_TIMEOUT",
               "HOTSWAP_MAX_RETRIES"}
CONTRACT_METRICS = {"hotswap_model_version", "hotswap_model_cache_hits_total",
                    "hotswap_model_cache_misses_total",
                    "hotswap_model_load_duration_seconds_bucket",
                    "hotswap_model_update_errors_total", "hotswap_model_reloads_total",
                    "hotswap_prediction_duration_seconds_bucket",
                    "hotswap_webhook_requests_total"}
RECEIVER_COMMAND = ["mlflow-hotswap-receiver", "--host", "0.0.0.0", "--port", "8000"]
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers which variables the code asked for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def receiver_settings(env: Mapping[str, str]) -> tuple[ReceiverSettings, set[str]]:
    recording = RecordingEnv(env)
    return ReceiverSettings.from_env(recording), recording.read


def plugin_settings(env: Mapping[str, str]) -> tuple[PluginSettings, set[str]]:
    recording = RecordingEnv(env)
    return PluginSettings.from_env(recording), recording.read


def mlflow_env_vars() -> set[str]:
    """Variables MLflow itself reads: its environment_variables module and `mlflow server`'s."""
    import mlflow.environment_variables as env_module

    names = {v.name for v in vars(env_module).values()
             if isinstance(getattr(v, "name", None), str) and hasattr(v, "get")}
    return names | {p.envvar for p in mlflow_server_command.params if isinstance(p.envvar, str)}


def check_environment_is_read(env: Mapping[str, str], read: set[str]) -> None:
    """Every variable set is one the component reads, or one MLflow reads in its process."""
    unknown = set(env) - read - mlflow_env_vars()
    assert not unknown, f"set but read by nothing: {sorted(unknown)}"


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def entry_points(group: str) -> dict[str, str]:
    raw = setup_cfg()["options.entry_points"][group]
    pairs = (line.split("=", 1) for line in raw.strip().splitlines() if line.strip())
    return {name.strip(): target.strip() for name, target in pairs}


def resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def receiver_routes(model_dir: str) -> dict[str, set[str]]:
    """The receiver app's routes: path -> methods. Built, not started: no MLflow needed."""
    settings = ReceiverSettings(tracking_uri="http://127.0.0.1:9", model_names=("m",),
                                model_dir=model_dir)
    app = create_app(settings)
    return {r.path: set(r.methods or ()) for r in app.routes if isinstance(r, Route)}


def exported_metrics() -> dict[str, set[str]]:
    """Sample names the receiver exports -> their label names, from a fresh Metrics registry."""
    metrics = Metrics()
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase) and metric._labelnames:
            # A labelled metric has no samples until a child exists.
            metric.labels(*["x"] * len(metric._labelnames))
    samples: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def run_receiver_main(command: list[str], env: Mapping[str, str], tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run the console script's real `main` with the file's command and environment, up to
    the point where it would start uvicorn; return what it passed to uvicorn."""
    target = entry_points("console_scripts")[command[0]]
    for name in RECEIVER_VARS | {"MLFLOW_REGISTRY_URI", "HOTSWAP_MAX_BODY_BYTES"}:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOTSWAP_MODEL_DIR", str(tmp_path))
    captured: dict[str, Any] = {}

    def fake_run(server: uvicorn.Server, sockets: Any = None) -> None:
        config = server.config
        captured.update(app=config.app, host=config.host, port=config.port)
        server.started = True  # as a server that ran and stopped

    monkeypatch.setattr(accepting, "run", fake_run)
    assert resolve(target)(command[1:]) == 0
    assert captured, f"{target} returned without starting uvicorn"
    return captured


def parse_mlflow_server(command: list[str], env: Mapping[str, str],
                        monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """`mlflow server`'s own parser applied to the file's command line and environment."""
    assert command[:2] == ["mlflow", "server"], command
    for param in mlflow_server_command.params:
        if isinstance(param.envvar, str):
            monkeypatch.delenv(param.envvar, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return dict(mlflow_server_command.make_context("server", list(command[2:])).params)


def check_registry_uri(params: Mapping[str, Any]) -> str:
    """The registry store URI is hotswap+<backend URI>, with a scheme the plugin registers."""
    registry = params["registry_store_uri"]
    assert registry == f"hotswap+{params['backend_store_uri']}"
    scheme = registry.split("://", 1)[0]
    stores = entry_points("mlflow.model_registry_store")
    assert scheme in stores, f"{scheme} is not a registered store scheme: {sorted(stores)}"
    assert isinstance(resolve(stores[scheme]), type)
    return str(registry)


def check_webhook_target(settings: PluginSettings, host: str, port: int,
                         routes: dict[str, set[str]]) -> None:
    assert len(settings.targets) == 1
    target = urlsplit(settings.targets[0])
    assert (target.scheme, target.hostname, target.port) == ("http", host, port)
    assert "POST" in routes.get(target.path, set()), f"no POST route {target.path}"


def load_compose() -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / "docker-compose.yml").read_text()))


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(compose["services"][name])


def parse_rollout(command: list[str]) -> Any:
    """`mlflow-hotswap rollout ...` as the console script parses it; checks the script is the
    one setup.cfg installs."""
    from mlflow_hotswap_plugin import commands

    script, *argv = command
    assert resolve(entry_points("console_scripts")[script]) is commands.main
    args = commands.parser().parse_args(argv)
    assert args.command == "rollout"
    return args
