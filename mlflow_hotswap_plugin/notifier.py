"""Deliver events to every receiver without ever holding up the registry call.

`Notifier.emit()` only puts work on a bounded queue; daemon worker threads resolve each target's
hostname and deliver to every address it resolves to (the replicas behind a Kubernetes headless
Service), connecting to the IP while keeping the original Host header (and TLS server name).
Each attempt has a timeout; connection errors, timeouts, 429 and 5xx are retried with
exponential backoff and jitter. A full queue drops the delivery and logs it.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import queue
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import urllib3
from urllib3.exceptions import HTTPError

from mlflow_hotswap_plugin import signing
from mlflow_hotswap_plugin.events import Event
from mlflow_hotswap_plugin.settings import Settings, redact

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], list[str]]

USER_AGENT = "mlflow-hotswap-plugin"
RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, one family only: IPv4 if it has any, else IPv6.

    One family because a dual-stack name lists each replica once per family, and a receiver
    listening on one of them would otherwise be notified twice or fail once per change.
    """
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    v4 = [str(info[4][0]) for info in infos if info[0] == socket.AF_INET]
    v6 = [str(info[4][0]) for info in infos if info[0] == socket.AF_INET6]
    return list(dict.fromkeys(v4 or v6))


@dataclass(frozen=True)
class Target:
    """A receiver URL, split into what the connection needs."""

    url: str
    scheme: str
    host: str
    port: int
    host_header: str
    path: str
    auth_header: str | None

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        assert parts.hostname  # Settings checked it
        scheme = parts.scheme
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        host = parts.hostname
        bracketed = f"[{host}]" if ":" in host else host
        host_header = bracketed if parts.port in (None, default_port) else f"{bracketed}:{port}"
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        auth = None
        if parts.username is not None:
            basic = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            auth = urllib3.util.make_headers(basic_auth=basic)["authorization"]
        return cls(url, scheme, host, port, host_header, path, auth)

    @property
    def safe_url(self) -> str:
        return redact(self.url)


@dataclass(frozen=True)
class Outcome:
    """How one delivery to one address ended."""

    target: Target
    address: str
    status: int | None
    error: str | None
    attempts: int

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True)
class _Job:
    event: Event
    target: Target
    address: str | None  # None: resolve the hostname first, then fan out


class Notifier:
    def __init__(self, settings: Settings, resolver: Resolver = resolve,
                 backoff_base: float = BACKOFF_BASE, backoff_max: float = BACKOFF_MAX) -> None:
        self.settings = settings
        self.targets = [Target.parse(url) for url in settings.targets]
        self._resolve = resolver
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._pool = urllib3.PoolManager(num_pools=64, maxsize=settings.workers, retries=False)
        self._lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=settings.queue_size)
        self._pid: int | None = None  # the process whose worker threads are running

    # -- the registry side: never blocks ------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Queue `event` for every target; returns at once, whatever the receivers do."""
        if not self.targets:
            return
        self._ensure_workers()
        for target in self.targets:
            self._put(_Job(event, target, None))

    def flush(self, timeout: float) -> bool:
        """Wait until every queued delivery has finished; False if `timeout` ran out first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _put(self, job: _Job) -> None:
        with self._lock:
            self._pending += 1
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._done()
            logger.warning("Notification queue full (%d): dropped %s for %s", self._queue.maxsize,
                           job.event.name, job.target.safe_url)

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            if self._pending == 0:
                self._idle.notify_all()

    def _ensure_workers(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        with self._lock:
            if self._pid == pid:
                return
            if self._pid is not None:
                # Forked after the workers started: the child has the queue but no threads.
                self._queue = queue.Queue(maxsize=self.settings.queue_size)
                self._pending = 0
                self._pool = urllib3.PoolManager(num_pools=64, maxsize=self.settings.workers,
                                                 retries=False)
            for index in range(self.settings.workers):
                threading.Thread(target=self._work, name=f"hotswap-notifier-{index}",
                                 daemon=True).start()
            if self._pid is None:
                # A short-lived `MlflowClient(registry_uri="hotswap+...")` script would otherwise
                # exit before its notifications leave.
                atexit.register(self.flush, self.settings.timeout)
            self._pid = pid

    def addresses(self, target: Target) -> list[str]:
        """Every address to deliver to for `target`; raises OSError when it cannot resolve."""
        return self._resolve(target.host, target.port)

    # -- the worker side ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                self._handle(job)
            except Exception:  # the worker's boundary: log, carry on
                logger.exception("Notifying %s of %s failed", job.target.safe_url, job.event.name)
            finally:
                self._done()

    def _handle(self, job: _Job) -> None:
        if job.address is None:
            try:
                addresses = self.addresses(job.target)
            except OSError as exc:
                logger.warning("Cannot resolve %s for %s: %s", job.target.host, job.event.name, exc)
                return
            if not addresses:
                logger.warning("%s resolves to no address: %s not sent", job.target.host,
                               job.event.name)
                return
            for address in addresses[1:]:
                self._put(_Job(job.event, job.target, address))
            job = _Job(job.event, job.target, addresses[0])
        assert job.address is not None
        outcome = self.deliver(job.event, job.target, job.address)
        if outcome.accepted:
            logger.debug("Notified %s (%s) of %s", job.target.safe_url, job.address, job.event.name)
        elif outcome.status == 401:
            logger.warning("%s (%s) rejected %s with 401: is HOTSWAP_WEBHOOK_SECRET the same on "
                           "both sides?", job.target.safe_url, job.address, job.event.name)
        else:
            reason = f"HTTP {outcome.status}" if outcome.status is not None else outcome.error
            logger.warning("Notifying %s (%s) of %s failed after %d attempt(s): %s",
                           job.target.safe_url, job.address, job.event.name, outcome.attempts,
                           reason)

    def deliver(self, event: Event, target: Target, address: str,
                retries: int | None = None) -> Outcome:
        """Send one delivery to one address, retrying as configured; blocks; never raises."""
        retries = self.settings.max_retries if retries is None else retries
        body = event.to_json()
        delivery_id = str(uuid.uuid4())
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "Host": target.host_header,
                   "User-Agent": USER_AGENT,
                   signing.DELIVERY_ID_HEADER: delivery_id, signing.TIMESTAMP_HEADER: timestamp}
        if self.settings.secret:
            headers[signing.SIGNATURE_HEADER] = signing.sign(self.settings.secret, delivery_id,
                                                             timestamp, body)
        if target.auth_header:
            headers["Authorization"] = target.auth_header
        pool_kwargs = {}
        if target.scheme == "https":
            # Connect to the IP, but check the certificate against the name in the URL.
            pool_kwargs = {"server_hostname": target.host, "assert_hostname": target.host}
        status: int | None = None
        error: str | None = None
        attempt = 0
        while True:
            attempt += 1
            try:
                pool = self._pool.connection_from_host(address, target.port, target.scheme,
                                                       pool_kwargs=pool_kwargs)
                response = pool.urlopen("POST", target.path, body=body, headers=headers,
                                        timeout=urllib3.Timeout(total=self.settings.timeout),
                                        retries=False, redirect=False, assert_same_host=False)
                status, error = response.status, None
                retry_after = response.headers.get("Retry-After")
                if status not in RETRY_STATUSES:
                    return Outcome(target, address, status, None, attempt)
            except HTTPError as exc:
                status, error, retry_after = None, _describe(exc), None
            if attempt > retries:
                return Outcome(target, address, status, error, attempt)
            time.sleep(self._backoff(attempt, retry_after))

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
        delay = random.uniform(delay / 2, delay)  # jitter: replicas don't retry in step
        if retry_after and retry_after.strip().isdigit():
            delay = max(delay, min(float(retry_after), self._backoff_max))
        return delay


def _describe(exc: BaseException) -> str:
    # urllib3 wraps the cause (e.g. "Connection refused") in a long message; keep it short.
    reason = getattr(exc, "reason", None)
    return f"{type(exc).__name__}: {reason or exc}"
