"""The rollout's state in the registry, where every replica, every controller and a person in
the MLflow UI see it: the canary's share (a registered-model tag), where the rollout stands (a
tag on the canary's version) and who runs it (a lease tag with an expiry)."""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from mlflow_hotswap_plugin.fleet.registry import Model, RegistryError, Version

SHARE_TAG = "hotswap.canary_percent"
ROLLOUT_TAG = "hotswap.rollout"
LEASE_TAG = "hotswap.rollout.lease"

_WHERE = re.compile(r"^(running|interrupted) at (\d+(?:\.\d+)?) %")


def percent_text(percent: float) -> str:
    return f"{percent:g}"


def resumable_at(recorded: str | None) -> float | None:
    """The share a `running at 25 %` or `interrupted at 25 %` tag stood at; None otherwise."""
    match = _WHERE.match(recorded or "")
    return float(match.group(2)) if match else None


def resolve(client: RegistryClient, name: str, reference: str) -> str | None:
    """The version `@alias` or a stage points to now; None when nothing is there."""
    try:
        if reference.startswith("@"):
            return client.get_model_version_by_alias(name, reference[1:]).version
        latest = client.get_latest_versions(name, [reference])
    except RegistryError as exc:
        if exc.refused:  # no such model or alias: MLflow says 404 or 400
            return None
        raise
    return latest[0].version if latest else None


class RegistryClient(Protocol):
    """The registry calls RolloutTags, LeaseKeeper and `resolve` make (registry.RestRegistry)."""

    def get_registered_model(self, name: str) -> Model: ...

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None: ...

    def delete_registered_model_tag(self, name: str, key: str) -> None: ...

    def get_model_version(self, name: str, version: str) -> Version: ...

    def get_model_version_by_alias(self, name: str, alias: str) -> Version: ...

    def get_latest_versions(self, name: str, stages: list[str]) -> list[Version]: ...

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None: ...

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None: ...

    def transition_model_version_stage(self, name: str, version: str, stage: str,
                                       archive_existing_versions: bool = False,
                                       ) -> Version: ...


class RolloutTags:
    """The tags of one rollout: `name`'s share and its canary `version`'s record."""

    def __init__(self, client: RegistryClient, name: str, version: str) -> None:
        self.client, self.name, self.version = client, name, version

    def set_share(self, percent: float) -> None:
        self.client.set_registered_model_tag(self.name, SHARE_TAG, percent_text(percent))

    def record(self, text: str) -> None:
        self.client.set_model_version_tag(self.name, self.version, ROLLOUT_TAG, text)

    def recorded(self) -> str | None:
        tags = self.client.get_model_version(self.name, self.version).tags or {}
        return tags.get(ROLLOUT_TAG)

    def promote(self, alias: str | None, stage: str | None) -> None:
        if alias:
            self.client.set_registered_model_alias(self.name, alias, self.version)
        if stage:
            self.client.transition_model_version_stage(self.name, self.version, stage,
                                                       archive_existing_versions=True)


@dataclass(frozen=True)
class Lease:
    holder: str
    expires: float  # seconds since the epoch

    def text(self) -> str:
        when = datetime.fromtimestamp(self.expires, timezone.utc)
        return f"{self.holder} until {when.isoformat(timespec='milliseconds')}"

    @classmethod
    def parse(cls, text: str) -> Lease | None:
        holder, _, when = text.rpartition(" until ")
        try:
            return cls(holder, datetime.fromisoformat(when).timestamp()) if holder else None
        except ValueError:
            return None


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseKeeper:
    """A lease on one model's rollout, kept in a registered-model tag. The registry has no
    compare-and-set: the lease is written, then read back, so of two controllers starting at
    once the later write wins and the other sees it has lost."""

    def __init__(self, client: RegistryClient, name: str, seconds: float = 15.0,
                 holder: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.client, self.name, self.seconds = client, name, seconds
        self.holder = holder or new_holder()
        self.clock = clock

    def current(self) -> Lease | None:
        tags = self.client.get_registered_model(self.name).tags or {}
        text = tags.get(LEASE_TAG)
        return Lease.parse(text) if text else None

    def held_by_other(self) -> Lease | None:
        """The live lease of another controller, if there is one."""
        lease = self.current()
        if lease is None or lease.holder == self.holder or lease.expires <= self.clock():
            return None
        return lease

    def take(self) -> bool:
        """Write our lease and check it stuck."""
        self.renew()
        lease = self.current()
        return lease is not None and lease.holder == self.holder

    def renew(self) -> None:
        lease = Lease(self.holder, self.clock() + self.seconds)
        self.client.set_registered_model_tag(self.name, LEASE_TAG, lease.text())

    def release(self) -> None:
        lease = self.current()
        if lease is not None and lease.holder == self.holder:
            self.client.delete_registered_model_tag(self.name, LEASE_TAG)

    def clear(self) -> None:
        """Remove whoever's lease (for `--abort`: the operator's word ends any rollout)."""
        if self.current() is not None:
            self.client.delete_registered_model_tag(self.name, LEASE_TAG)
