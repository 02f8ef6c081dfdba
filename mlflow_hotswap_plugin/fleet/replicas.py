"""The replicas behind receiver URLs, and what each one says: `/models/current` and `/metrics`.

A URL whose host name resolves to several addresses (a Kubernetes headless Service) stands for
one replica per address, each asked on its own, with the name kept in the Host header.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from mlflow_hotswap_plugin import targets
from mlflow_hotswap_plugin.fleet.exposition import Samples, parse

TIMEOUT_SECONDS = 2.0
MAX_PARALLEL = 32


@dataclass(frozen=True)
class Replica:
    url: str  # scheme://address:port, the path of the URL given kept
    host: str  # the name it was found under, sent as Host
    error: str | None = None  # when the name did not resolve

    @property
    def address(self) -> str:
        return urlsplit(self.url).netloc


def expand(urls: Iterable[str]) -> list[Replica]:
    """One Replica per address each URL's host resolves to, in order, without duplicates."""
    found: dict[str, Replica] = {}
    for url in urls:
        parts = urlsplit(url.strip().rstrip("/"))
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or ""
        try:
            addresses = targets.resolve(host, port)
        except OSError as exc:
            found.setdefault(url, Replica(url, host, f"cannot resolve {host}: {exc}"))
            continue
        for address in addresses:
            shown = f"[{address}]" if ":" in address else address
            replica_url = f"{parts.scheme}://{shown}:{port}{parts.path}"
            found.setdefault(replica_url, Replica(replica_url, parts.netloc))
    return list(found.values())


@dataclass(frozen=True)
class Page:
    """What one replica said; `current` is None when it did not answer or serves nothing."""

    replica: Replica
    current: dict[str, Any] | None = None
    samples: Samples = field(default_factory=dict)
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.error is None

    @property
    def ready(self) -> bool:
        return self.current is not None

    def model(self, name: str | None = None) -> dict[str, Any]:
        """`/models/current`'s description of `name` (the default model when None)."""
        if self.current is None:
            return {}
        if name is None or self.current.get("name") == name:
            return self.current
        described: dict[str, Any] = (self.current.get("models") or {}).get(name) or {}
        return described


def read(replica: Replica, session: requests.Session, metric_names: Sequence[str] | None
         ) -> Page:
    """Ask one replica; any failure makes an unreachable page, never an exception."""
    if replica.error:
        return Page(replica, error=replica.error)
    headers = {"Host": replica.host}
    try:
        metrics = session.get(replica.url + "/metrics", headers=headers,
                              timeout=TIMEOUT_SECONDS)
        metrics.raise_for_status()
        current = session.get(replica.url + "/models/current", headers=headers,
                              timeout=TIMEOUT_SECONDS)
    except requests.RequestException as exc:
        return Page(replica, error=f"unreachable: {type(exc).__name__}")
    body = current.json() if current.status_code == 200 else None
    return Page(replica, body if isinstance(body, dict) else None,
                parse(metrics.text, metric_names))


def read_all(urls: Sequence[str], metric_names: Sequence[str] | None = None,
             session: requests.Session | None = None) -> list[Page]:
    """Every replica behind `urls`, asked in parallel."""
    replicas = expand(urls)
    if not replicas:
        return []
    session = session or requests.Session()
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(replicas))) as pool:
        return list(pool.map(lambda replica: read(replica, session, metric_names), replicas))
