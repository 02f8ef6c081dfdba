"""A background prediction client: threads that keep posting to a receiver and record every
answer, so a swap can be shown (and tested) to fail nothing. Used by the demo and the tests."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

from examples.processes import wait_until

CLIENT_THREADS = 2


@dataclass
class Answer:
    at: float  # time.time() when the answer arrived
    status: int  # 0: no HTTP answer at all
    version: str | None
    url: str  # the receiver that was asked


class PredictionClient:
    """Threads that keep posting to the receiver and record every answer.

    `url` is one receiver, or several (replicas) asked in turn. `body` is one request body, or a
    list of them taken in turn (live traffic for a shadow to be compared on). `pause`: seconds
    each thread waits after an answer (0: none), leaving the machine room for other work.
    """

    def __init__(self, url: str | Sequence[str], body: dict[str, Any] | list[dict[str, Any]],
                 threads: int = CLIENT_THREADS, pause: float = 0.0) -> None:
        self.urls = [url] if isinstance(url, str) else list(url)
        self.pause = pause
        self._bodies = body if isinstance(body, list) else [body]
        self._answers: list[Answer] = []
        self._errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True,
                                          name=f"client-{i}") for i in range(threads)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=15)

    @property
    def threads(self) -> int:
        return len(self._threads)

    def _run(self, index: int) -> None:
        sent = 0
        with requests.Session() as session:
            while not self._stop.is_set():
                body = self._bodies[sent % len(self._bodies)]
                # Each thread starts at another replica, so that all of them are busy at once.
                url = self.urls[(sent + index) % len(self.urls)]
                sent += 1
                try:
                    response = session.post(url + "/invocations", json=body, timeout=10)
                    answer = Answer(time.time(), response.status_code,
                                    response.headers.get("X-Model-Version"), url)
                    error = None if response.ok else f"{response.status_code} {response.text[:200]}"
                except requests.RequestException as exc:
                    answer, error = Answer(time.time(), 0, None, url), repr(exc)
                with self._lock:
                    self._answers.append(answer)
                    if error is not None:
                        self._errors.append(error)
                if self.pause:
                    self._stop.wait(self.pause)

    def first_answer(self, version: str, after: float, url: str | None = None) -> float | None:
        """When `version` first answered since `after` (at `url` only, when given)."""
        with self._lock:
            return next((a.at for a in self._answers
                         if a.at >= after and a.status == 200 and a.version == version
                         and url in (None, a.url)), None)

    def answers_from(self, version: str, after: float) -> int:
        with self._lock:
            return sum(1 for a in self._answers
                       if a.at >= after and a.status == 200 and a.version == version)

    def keep_going(self, version: str, answers: int = 25) -> None:
        """Go on until `answers` more came from `version`: a swap that broke something would
        show in what follows it, not only during it."""
        after = time.time()
        wait_until(lambda: self.answers_from(version, after) >= answers, 30,
                   message=f"{answers} more answers from version {version}")

    def counts(self) -> tuple[int, int, Counter[str]]:
        """(answers, failed, answers per version)."""
        with self._lock:
            failed = sum(1 for a in self._answers if a.status != 200)
            versions = Counter(a.version for a in self._answers if a.status == 200 and a.version)
            return len(self._answers), failed, versions

    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    def describe(self) -> str:
        answers, failed, versions = self.counts()
        split = ", ".join(f"{n:,} from v{v}" for v, n in sorted(versions.items()))
        return f"{answers:,} answers ({split}); {failed} failed"
