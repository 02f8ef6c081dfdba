"""Check an incoming notification: signature, freshness, replay. Says nothing of its content;
the registry is the truth, so a notification only ever triggers a re-resolve."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache

from mlflow_hotswap_plugin.signing import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    parse_secrets,
    verify,
)

# Notifications are a few hundred bytes; a bigger body is refused (413) before any work.
MAX_NOTIFICATION_BYTES = 64 * 1024
# Unix seconds in ASCII digits, an optional fraction: float() alone would also take "nan",
# "inf", "1_0" and other scripts' digits.
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?", re.ASCII)


class InvalidSignature(ValueError):
    """The notification is unsigned, wrongly signed, or its timestamp is stale."""


class MalformedNotification(ValueError):
    """The signature holds but the body is not a notification."""


@dataclass(frozen=True)
class Notification:
    delivery_id: str | None
    entity: str
    action: str
    data: dict[str, Any]

    def model_names(self) -> set[str]:
        """The registered model names this notification is about (a rename names two)."""
        names = (self.data.get("name"), self.data.get("new_name"))
        return {n for n in names if isinstance(n, str)}  # a list here must not raise


class WebhookVerifier:
    def __init__(self, secret: str | Iterable[str] | None, max_age: float,
                 clock: Callable[[], float] = time.time) -> None:
        # HOTSWAP_WEBHOOK_SECRET may hold several, comma-separated, for rotation: any verifies.
        self._secrets = (parse_secrets(secret) if secret is None or isinstance(secret, str)
                         else tuple(secret))
        self._max_age = max_age
        self._clock = clock
        # Ids live as long as a timestamp stays acceptable, so a replay is either stale or seen.
        self._seen: TTLCache[str, bool] = TTLCache(maxsize=100_000, ttl=2 * max_age, timer=clock)
        self._lock = threading.Lock()

    def check(self, headers: Mapping[str, str], body: bytes) -> Notification | None:
        """The notification, or None when this delivery id was already accepted.

        Raises InvalidSignature for a missing, wrong or stale signature, MalformedNotification for
        a body that is not a notification.
        """
        delivery_id = headers.get(DELIVERY_ID_HEADER)
        timestamp = headers.get(TIMESTAMP_HEADER)
        if self._secrets:
            signature = headers.get(SIGNATURE_HEADER)
            if not (delivery_id and timestamp and signature):
                raise InvalidSignature(f"The notification is not signed: {DELIVERY_ID_HEADER}, "
                                    f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required.")
            if not verify(self._secrets, delivery_id, timestamp, body, signature):
                raise InvalidSignature("The notification's signature does not match.")
        if timestamp is not None:
            self._check_fresh(timestamp)
        notification = _parse(delivery_id, body)
        if delivery_id is not None:
            with self._lock:
                if delivery_id in self._seen:
                    return None
                self._seen[delivery_id] = True
        return notification

    def _check_fresh(self, timestamp: str) -> None:
        if not _UNIX_SECONDS.fullmatch(timestamp):
            raise InvalidSignature(
                f"{TIMESTAMP_HEADER} {timestamp[:40]!r} is not unix seconds.")
        sent = float(timestamp)
        age = self._clock() - sent
        if abs(age) > self._max_age:
            raise InvalidSignature(f"The notification's timestamp is {age:.0f}s off; at most "
                                f"{self._max_age:.0f}s is accepted.")


def _parse(delivery_id: str | None, body: bytes) -> Notification:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise MalformedNotification("The notification body is not valid JSON.") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), dict):
        raise MalformedNotification(
            "The notification must be an object with 'entity', 'action' and 'data'.")
    return Notification(delivery_id, str(document.get("entity", "")),
                        str(document.get("action", "")), document["data"])

