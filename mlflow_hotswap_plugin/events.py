"""Registry events and their wire form: the envelope of MLflow's native webhooks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

STAGE_TRANSITIONED = ("model_version", "stage_transitioned")
ALIAS_CREATED = ("model_version_alias", "created")
ALIAS_DELETED = ("model_version_alias", "deleted")
VERSION_DELETED = ("model_version", "deleted")
MODEL_DELETED = ("registered_model", "deleted")
MODEL_RENAMED = ("registered_model", "renamed")
MODEL_TAG_SET = ("registered_model_tag", "set")
MODEL_TAG_DELETED = ("registered_model_tag", "deleted")
VERSION_TAG_SET = ("model_version_tag", "set")
VERSION_TAG_DELETED = ("model_version_tag", "deleted")


@dataclass(frozen=True)
class Event:
    entity: str
    action: str
    data: dict[str, Any]
    timestamp: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    @property
    def name(self) -> str:
        return f"{self.entity}.{self.action}"

    def to_json(self) -> bytes:
        envelope = {
            "entity": self.entity,
            "action": self.action,
            "timestamp": self.timestamp,
            "data": self.data,
        }
        return json.dumps(envelope).encode()


def stage_transitioned(name: str, version: str, from_stage: str, to_stage: str) -> Event:
    data = {"name": name, "version": str(version), "from_stage": from_stage, "to_stage": to_stage}
    return Event(*STAGE_TRANSITIONED, data)


def alias_created(name: str, alias: str, version: str) -> Event:
    return Event(*ALIAS_CREATED, {"name": name, "alias": alias, "version": str(version)})


def alias_deleted(name: str, alias: str) -> Event:
    return Event(*ALIAS_DELETED, {"name": name, "alias": alias})


def version_deleted(name: str, version: str) -> Event:
    return Event(*VERSION_DELETED, {"name": name, "version": str(version)})


def model_deleted(name: str) -> Event:
    return Event(*MODEL_DELETED, {"name": name})


def model_renamed(name: str, new_name: str) -> Event:
    return Event(*MODEL_RENAMED, {"name": name, "new_name": new_name})


# Tag events carry the key and the new value; a deletion has no value (as MLflow's own webhook).
def model_tag_set(name: str, key: str, value: str) -> Event:
    return Event(*MODEL_TAG_SET, {"name": name, "key": key, "value": value})


def model_tag_deleted(name: str, key: str) -> Event:
    return Event(*MODEL_TAG_DELETED, {"name": name, "key": key})


def version_tag_set(name: str, version: str, key: str, value: str) -> Event:
    return Event(*VERSION_TAG_SET,
                 {"name": name, "version": str(version), "key": key, "value": value})


def version_tag_deleted(name: str, version: str, key: str) -> Event:
    return Event(*VERSION_TAG_DELETED, {"name": name, "version": str(version), "key": key})
