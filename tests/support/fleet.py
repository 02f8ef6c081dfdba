"""Fakes for the fleet controller's unit tests: an in-memory registry client (the calls the
controller makes, logged in order) and replicas whose pages come from the receiver's real metric
objects. The clock is tests/support/fakes.py's `ManualClock`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest

from mlflow_hotswap_plugin.fleet.analysis import METRICS
from mlflow_hotswap_plugin.fleet.exposition import Samples, parse
from mlflow_hotswap_plugin.fleet.registry import Model, RegistryError, Version
from mlflow_hotswap_plugin.fleet.replicas import Page, Replica
from receiver.metrics import Metrics


@dataclass
class FakeRegistryClient:
    """The registry calls the rollout makes, on one model's tags, aliases and stages."""

    model_tags: dict[str, str] = field(default_factory=dict)
    version_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    stages: dict[str, str] = field(default_factory=dict)  # stage -> its latest version
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self.calls.append(("model_tag", key, value))
        self.model_tags[key] = value

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        self.calls.append(("model_tag_deleted", key))
        self.model_tags.pop(key, None)

    def get_registered_model(self, name: str) -> Model:
        return Model(dict(self.model_tags))

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.calls.append(("version_tag", version, key, value))
        self.version_tags.setdefault(version, {})[key] = value

    def get_model_version(self, name: str, version: str) -> Version:
        return Version(version, tags=dict(self.version_tags.get(version, {})))

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.calls.append(("alias", alias, version))
        self.aliases[alias] = version

    def transition_model_version_stage(self, name: str, version: str, stage: str,
                                       archive_existing_versions: bool = False) -> Version:
        self.calls.append(("stage", stage, version))
        self.stages[stage] = version
        return Version(version, stage)

    def get_model_version_by_alias(self, name: str, alias: str) -> Version:
        if alias not in self.aliases:
            raise RegistryError(f"no alias {alias}", "INVALID_PARAMETER_VALUE", 400)
        return Version(self.aliases[alias])

    def get_latest_versions(self, name: str, stages: list[str]) -> list[Version]:
        return [Version(self.stages[stage], stage) for stage in stages if stage in self.stages]


class FakeReplica:
    """A replica's real metric objects; `restart()` starts them again from zero."""

    def __init__(self, address: str) -> None:
        self.replica = Replica(f"http://{address}", address)
        self.metrics = Metrics()
        self.reachable = True
        self.current: dict[str, Any] = {}

    def serve(self, version: str, canary: str, percent: float) -> None:
        self.current = {"name": "m", "version": version,
                        "canary": {"version": canary, "percent": percent, "active": True}}

    def answer(self, role: str, version: str, count: int, seconds: float,
               errors: int = 0, protocol: str = "mlflow") -> None:
        labels = {"model": "m", "version": version, "role": role, "protocol": protocol}
        self.metrics.predictions.labels(**labels).inc(count)
        if errors:
            self.metrics.prediction_errors.labels(**labels).inc(errors)
        for _ in range(count):
            self.metrics.prediction_duration.labels(role=role).observe(seconds)

    def restart(self) -> None:
        self.metrics = Metrics()

    def page(self) -> Page:
        if not self.reachable:
            return Page(self.replica, error="unreachable: ConnectionError")
        samples: Samples = parse(generate_latest(self.metrics.registry).decode(), METRICS)
        return Page(self.replica, self.current, samples)
