"""One delivery to one address: sign, send one attempt, and the backoff between attempts.

Each attempt has a timeout and is signed afresh (same delivery id, new timestamp), so a retry
after a long backoff is not stale at the receiver. The connection goes to the address while the
Host header (and the TLS server name) stay the URL's. Connection errors, timeouts, 429 and 5xx
are worth a retry; anything else is the receiver's answer.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import urllib3
from urllib3.exceptions import HTTPError

from mlflow_hotswap_plugin import signing
from mlflow_hotswap_plugin.events import Event
from mlflow_hotswap_plugin.targets import Target

USER_AGENT = "mlflow-hotswap-plugin"
RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0


@dataclass(frozen=True)
class Attempt:
    """How one attempt ended: the receiver's status, or why there was none."""

    status: int | None
    error: str | None = None
    retry_after: str | None = None

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status in RETRY_STATUSES


@dataclass(frozen=True)
class Outcome:
    """How one delivery to one address ended, after its last attempt."""

    target: Target
    address: str
    status: int | None
    error: str | None
    attempts: int

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class Backoff:
    base: float = BACKOFF_BASE
    maximum: float = BACKOFF_MAX

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1, 2, ...)."""
        delay = min(self.maximum, self.base * 2 ** (attempt - 1))
        delay = random.uniform(delay / 2, delay)  # jitter: replicas don't retry in step
        hint = (retry_after or "").strip()
        if hint.isascii() and hint.isdigit():
            delay = max(delay, min(float(hint), self.maximum))
        return delay


class Sender:
    """Sends single attempts; safe to share between threads (urllib3 pools are)."""

    def __init__(self, secret: str | None, timeout: float, pools: int = 64,
                 clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._timeout = urllib3.Timeout(total=timeout)
        self._clock = clock
        # Kept-alive connections for the `pools` addresses used last; older ones are closed.
        self._pool = urllib3.PoolManager(num_pools=pools, maxsize=1, block=False, retries=False)

    def attempt(self, target: Target, address: str, body: bytes, delivery_id: str) -> Attempt:
        """POST `body` to `address` once; blocks up to the timeout; never raises."""
        pool_kwargs: dict[str, Any] = {}
        if target.scheme == "https":
            # Connect to the IP, but check the certificate against the name in the URL.
            pool_kwargs = {"server_hostname": target.host, "assert_hostname": target.host}
        try:
            pool = self._pool.connection_from_host(address, target.port, target.scheme,
                                                   pool_kwargs=pool_kwargs)
            response = pool.urlopen("POST", target.path, body=body,
                                    headers=self._headers(target, delivery_id, body),
                                    timeout=self._timeout, retries=False, redirect=False,
                                    assert_same_host=False)
        except HTTPError as exc:
            return Attempt(None, _describe(exc))
        return Attempt(response.status, None, response.headers.get("Retry-After"))

    def _headers(self, target: Target, delivery_id: str, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Host": target.host_header,
                   "User-Agent": USER_AGENT,
                   **signing.headers(body, self._secret, delivery_id, int(self._clock()))}
        if target.auth_header:
            headers["Authorization"] = target.auth_header
        return headers


def deliver(sender: Sender, event: Event, target: Target, address: str, retries: int,
            backoff: Backoff | None = None) -> Outcome:
    """Deliver `event` to one address, retrying in this thread; blocks; never raises."""
    backoff = backoff or Backoff()
    body = event.to_json()
    delivery_id = str(uuid.uuid4())
    attempt = 0
    while True:
        attempt += 1
        result = sender.attempt(target, address, body, delivery_id)
        if not result.retryable or attempt > retries:
            return Outcome(target, address, result.status, result.error, attempt)
        time.sleep(backoff.delay(attempt, result.retry_after))


def _describe(exc: BaseException) -> str:
    # urllib3 wraps the cause (e.g. "Connection refused") in a long message; keep it short.
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"
