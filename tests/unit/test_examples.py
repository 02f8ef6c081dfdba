"""The examples agree with the code: train_model.py's pieces, and the deployment files.

Docker and Kubernetes can't run here, so the files are parsed and checked against the code that
will run inside them: the receiver's and the plugin's settings (fed the files' environments),
the receiver's routes and metrics registry, `mlflow server`'s own option parser, setup.cfg's
entry points, and DESIGN.md's tables.
"""

from __future__ import annotations

import configparser
import importlib
import json
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import uvicorn
import yaml
from mlflow.cli import server as mlflow_server_command
from mlflow.server.security_utils import is_allowed_host_header
from prometheus_client.metrics import MetricWrapperBase
from starlette.routing import Route

from examples import train_model
from examples.train_model import FEATURES, make_transactions, sample_request, train
from mlflow_hotswap_plugin.settings import Settings as PluginSettings
from receiver.app import create_app
from receiver.metrics import Metrics
from receiver.settings import Settings as ReceiverSettings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
K8S = EXAMPLES / "k8s"

# DESIGN.md's tables: the contract the files are written against.
RECEIVER_VARS = {"MLFLOW_TRACKING_URI", "MODEL_NAME", "MODEL_STAGE", "MODEL_ALIAS",
                 "MODEL_CACHE_SIZE", "MODEL_UPDATE_INTERVAL", "HOTSWAP_WEBHOOK_SECRET",
                 "HOTSWAP_ADMIN_TOKEN"}
PLUGIN_VARS = {"HOTSWAP_TARGETS", "HOTSWAP_WEBHOOK_SECRET", "HOTSWAP_TIMEOUT",
               "HOTSWAP_MAX_RETRIES"}
DESIGN_METRICS = {"hotswap_model_version", "hotswap_model_cache_hits_total",
                  "hotswap_model_cache_misses_total", "hotswap_model_load_duration_seconds_bucket",
                  "hotswap_model_update_errors_total", "hotswap_model_reloads_total",
                  "hotswap_prediction_duration_seconds_bucket", "hotswap_webhook_requests_total"}
RECEIVER_COMMAND = ["mlflow-hotswap-receiver", "--host", "0.0.0.0", "--port", "8000"]
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}


# --- helpers ---------------------------------------------------------------------------------

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


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """The receiver app's routes: path -> methods. Built, not started: no MLflow needed."""
    settings = ReceiverSettings(tracking_uri="http://127.0.0.1:9", model_names=("m",),
                                model_dir=str(tmp_path_factory.mktemp("models")))
    app = create_app(settings)
    return {r.path: set(r.methods or ()) for r in app.routes if isinstance(r, Route)}


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
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

    def fake_run(app: Any, **kwargs: Any) -> None:
        captured.update(kwargs, app=app)

    monkeypatch.setattr(uvicorn, "run", fake_run)
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


# --- train_model.py ----------------------------------------------------------------------------

def test_transactions_have_twenty_named_float_features_and_about_two_percent_fraud() -> None:
    frame, labels = make_transactions(20_000, seed=3)

    assert list(frame.columns) == list(FEATURES) and len(FEATURES) == 20
    assert {"amount", "hour", "merchant_risk"} <= set(FEATURES)
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert frame.shape == (20_000, 20) and labels.shape == (20_000,)
    assert set(np.unique(labels)) == {0, 1}
    assert 0.015 < labels.mean() < 0.025
    assert not frame.isna().any().any()


def test_transactions_are_reproducible_and_differ_by_seed() -> None:
    a, labels_a = make_transactions(500, seed=1)
    b, labels_b = make_transactions(500, seed=1)
    c, _ = make_transactions(500, seed=2)

    assert a.equals(b) and np.array_equal(labels_a, labels_b)
    assert not a.equals(c)


def test_train_scores_the_held_out_rows_and_seeds_give_different_forests() -> None:
    frame, labels = make_transactions(6_000, seed=1)
    first = train(frame, labels, n_estimators=10, seed=1)
    second = train(frame, labels, n_estimators=10, seed=2)

    assert first.metrics["roc_auc"] > 0.85
    assert 0 < first.metrics["precision"] <= 1 and 0 < first.metrics["recall"] <= 1
    assert len(first.model.estimators_) == 10
    assert list(first.input_example.columns) == list(FEATURES)
    rows = frame.head(200)
    assert not np.allclose(first.model.predict_proba(rows), second.model.predict_proba(rows))


def test_sample_request_is_a_dataframe_split_body_with_the_features() -> None:
    body = sample_request(3)["dataframe_split"]

    assert isinstance(body, dict)
    assert body["columns"] == list(FEATURES)
    assert len(body["data"]) == 3 and all(len(row) == 20 for row in body["data"])
    json.dumps(body)  # what a client sends must serialise


def test_cli_defaults_and_stage_flags() -> None:
    args = train_model.parse_args(["--stage", "Staging", "--alias", "a", "--alias", "b"])

    assert args.model_name == "fraud_detection_model" and args.n_estimators == 50
    assert args.stage == "Staging" and args.alias == ["a", "b"] and args.archive_existing
    assert not train_model.parse_args(["--no-archive-existing"]).archive_existing
    with pytest.raises(SystemExit):
        train_model.parse_args(["--n-estimators", "0"])


# --- docker-compose.yml --------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / "docker-compose.yml").read_text()))


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(compose["services"][name])


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
    assert RECEIVER_VARS <= read, f"in DESIGN.md, never read: {sorted(RECEIVER_VARS - read)}"
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
    assert PLUGIN_VARS <= read
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


# --- Dockerfile ----------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (EXAMPLES / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def test_dockerfile_copies_paths_that_exist_and_installs_known_extras(
        compose: dict[str, Any]) -> None:
    instructions = dockerfile_instructions()
    for kind, rest in instructions:
        if kind == "COPY":
            *sources, _ = shlex.split(rest)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    extras = set(setup_cfg()["options.extras_require"])
    installs = " ".join(rest for kind, rest in instructions
                        if kind == "RUN" and "pip install" in rest)
    for wanted in re.findall(r"\.\[([\w,-]+)\]", installs):
        assert set(wanted.split(",")) <= extras
    assert "postgres" in installs and "scikit-learn" in installs
    # The image's default command is the receiver, exactly as compose and k8s start it.
    (cmd,) = [json.loads(rest) for kind, rest in instructions if kind == "CMD"]
    assert cmd == RECEIVER_COMMAND == service(compose, "receiver")["command"]
    workdir = next(rest for kind, rest in instructions if kind == "WORKDIR")
    assert ("COPY", "examples ./examples") in instructions and workdir.startswith("/")


def test_dockerignore_keeps_the_virtualenv_out_of_the_context() -> None:
    ignored = (EXAMPLES / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


# --- Kubernetes ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object kustomization.yaml applies, by (kind, name); plus train-job.yaml."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert on_disk - listed == {"train-job.yaml"}, "every manifest but the Job is applied"
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
    clients = [k8s[("Deployment", "hotswap-receiver")], k8s[("Job", "train-fraud-model")]]
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


# --- Grafana dashboard ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads((EXAMPLES / "grafana-dashboard.json").read_text()))


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def test_design_metrics_are_exported_by_the_receiver(exported: dict[str, set[str]]) -> None:
    assert DESIGN_METRICS <= set(exported), sorted(DESIGN_METRICS - set(exported))
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
