"""The registry calls of a rollout, over MLflow's REST API (`/api/2.0/mlflow/...`).

A rollout talks to the tracking server that runs the plugin: only writes made there reach the
replicas by push. So an HTTP client is all the controller needs, and it starts in a fraction of
a second where importing MLflow's own client costs two seconds of CPU. Credentials and TLS come
from MLflow's own variables, as its client reads them: MLFLOW_TRACKING_TOKEN,
MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or `user:password@` in the URI),
MLFLOW_TRACKING_INSECURE_TLS, MLFLOW_TRACKING_SERVER_CERT_PATH and
MLFLOW_TRACKING_CLIENT_CERT_PATH. A call is retried, with backoff, while the server is
unreachable or answers 429 or 5xx, as MLflow's client does: a registry restarted mid-rollout
costs time, not the rollout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from mlflow_hotswap_plugin.env import bare_url, scrub

API = "/api/2.0/mlflow"
TIMEOUT = 30.0  # seconds per attempt
RETRIES = Retry(total=6, connect=6, read=2, backoff_factor=0.5, backoff_max=10.0,
                status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None,
                raise_on_status=False)


class RegistryError(Exception):
    """The registry refused a call, or could not be reached; says which call and why."""

    def __init__(self, message: str, error_code: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.status = status  # None: no answer

    @property
    def refused(self) -> bool:
        """The server answered that the call cannot be done (4xx: nothing of that name, a
        bad value), as opposed to not answering at all."""
        return self.status is not None and 400 <= self.status < 500


@dataclass(frozen=True)
class Version:
    version: str
    current_stage: str = "None"
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Model:
    tags: dict[str, str] = field(default_factory=dict)


def tracking_uri(environ: Mapping[str, str] = os.environ) -> str:
    """The registry's base URL; a ValueError says what to set when there is none."""
    uri = environ.get("MLFLOW_REGISTRY_URI") or environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri.startswith(("http://", "https://")):
        raise ValueError(
            "set MLFLOW_TRACKING_URI to the http(s) URL of the MLflow server that runs the "
            f"hotswap plugin (got {bare_url(uri) if uri else 'nothing'}): share changes reach "
            "the replicas through it")
    return uri.rstrip("/")


def session_for(environ: Mapping[str, str] = os.environ) -> requests.Session:
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=RETRIES))
    session.mount("https://", HTTPAdapter(max_retries=RETRIES))
    token = environ.get("MLFLOW_TRACKING_TOKEN")
    user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get(
        "MLFLOW_TRACKING_PASSWORD")
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif user and password:
        session.auth = (user, password)
    if environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        session.verify = False
    elif environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        session.verify = environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    if environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        session.cert = environ["MLFLOW_TRACKING_CLIENT_CERT_PATH"]
    return session


def _tags(entity: dict[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag.get("value", "") for tag in entity.get("tags") or []}


def _version(entity: dict[str, Any]) -> Version:
    return Version(str(entity["version"]), entity.get("current_stage") or "None",
                   _tags(entity))


class RestRegistry:
    """The calls RolloutTags, LeaseKeeper and the plan make, named as MlflowClient names them."""

    def __init__(self, base_url: str, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or session_for()

    @classmethod
    def from_environment(cls) -> RestRegistry:
        return cls(tracking_uri(), session_for())

    def get_registered_model(self, name: str) -> Model:
        found = self._call("GET", "/registered-models/get", {"name": name})
        return Model(_tags(found["registered_model"]))

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self._call("POST", "/registered-models/set-tag", {"name": name, "key": key,
                                                          "value": value})

    def delete_registered_model_tag(self, name: str, key: str) -> None:
        self._call("DELETE", "/registered-models/delete-tag", {"name": name, "key": key})

    def get_model_version(self, name: str, version: str) -> Version:
        found = self._call("GET", "/model-versions/get", {"name": name, "version": version})
        return _version(found["model_version"])

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._call("POST", "/model-versions/set-tag", {"name": name, "version": version,
                                                       "key": key, "value": value})

    def get_model_version_by_alias(self, name: str, alias: str) -> Version:
        found = self._call("GET", "/registered-models/alias", {"name": name, "alias": alias})
        return _version(found["model_version"])

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self._call("POST", "/registered-models/alias", {"name": name, "alias": alias,
                                                        "version": version})

    def get_latest_versions(self, name: str, stages: list[str]) -> list[Version]:
        found = self._call("POST", "/registered-models/get-latest-versions",
                           {"name": name, "stages": stages})
        return [_version(entity) for entity in found.get("model_versions") or []]

    def transition_model_version_stage(self, name: str, version: str, stage: str,
                                       archive_existing_versions: bool = False) -> Version:
        found = self._call("POST", "/model-versions/transition-stage", {
            "name": name, "version": version, "stage": stage,
            "archive_existing_versions": archive_existing_versions})
        return _version(found["model_version"])

    def _call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url + API + path
        what = f"{method} {API}{path}"
        as_query = method == "GET"
        try:
            answer = self.session.request(method, url, params=body if as_query else None,
                                          json=None if as_query else body, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise RegistryError(f"{what}: {scrub(str(exc))}") from exc
        try:
            found = answer.json()
        except ValueError:
            found = None
        if not answer.ok:
            error = found if isinstance(found, dict) else {}
            raise RegistryError(f"{what}: {answer.status_code} "
                                f"{error.get('message') or answer.text[:200]}",
                                str(error.get("error_code", "")), answer.status_code)
        if not isinstance(found, dict):
            raise RegistryError(f"{what}: the answer is not a JSON object")
        return found
