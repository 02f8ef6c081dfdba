"""Background prediction clients that record every answer, to prove a swap fails nothing."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass
class Outcome:
    status: int  # 0 when the request did not get an HTTP answer at all
    version: str | None
    error: str | None = None


@dataclass
class PredictionLoad:
    """`clients` threads, each with its own kept-alive connection, posting `body` until stopped."""
    url: str
    body: dict[str, Any]
    clients: int = 8
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True)
                         for _ in range(self.clients)]

    def __enter__(self) -> PredictionLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _client(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    response = session.post(self.url, json=self.body, timeout=10)
                    outcome = Outcome(response.status_code, response.headers.get("X-Model-Version"),
                                      None if response.ok else response.text[:200])
                except requests.RequestException as exc:
                    outcome = Outcome(0, None, repr(exc))
                with self._lock:
                    self.outcomes.append(outcome)

    def count(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def versions(self) -> Counter[str | None]:
        with self._lock:
            return Counter(o.version for o in self.outcomes)

    def failures(self) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.status != 200]
