"""Sign and verify notifications exactly as MLflow's native webhooks do.

Standard library only: the receiver imports this module too, so one function verifies both
our plugin's notifications and MLflow's own webhooks.

`HOTSWAP_WEBHOOK_SECRET` may hold several comma-separated secrets, so a secret can be rotated
without a window of 401s: the plugin signs with the first, a receiver accepts any of them
(`parse_secrets` reads the variable the same way on both sides).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Iterable

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"


def parse_secrets(value: str | None) -> tuple[str, ...]:
    """The secrets in a `HOTSWAP_WEBHOOK_SECRET` value, in order; () when unset or blank."""
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """Return the header value `v1,<base64 HMAC-SHA256(secret, "{id}.{ts}.{body}")>`."""
    signed = _utf8(f"{delivery_id}.{timestamp}.") + body
    digest = hmac.new(_utf8(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def headers(body: bytes, secret: str | None, delivery_id: str | None = None,
            timestamp: int | str | None = None) -> dict[str, str]:
    """The headers of one signed delivery of `body`: its id, a timestamp and the signature.

    A fresh id and the current time unless given (a retry keeps its id and takes a new time);
    no signature header without a secret.
    """
    delivery_id = str(uuid.uuid4()) if delivery_id is None else delivery_id
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signed = {DELIVERY_ID_HEADER: delivery_id, TIMESTAMP_HEADER: stamp}
    if secret is not None:
        signed[SIGNATURE_HEADER] = sign(secret, delivery_id, stamp, body)
    return signed


def verify(secrets: str | Iterable[str], delivery_id: str, timestamp: str, body: bytes,
           signature: str) -> bool:
    """True when `signature` is a valid v1 signature of this delivery under any of `secrets`.

    `secrets` is one secret (a str, taken whole) or several. Every secret is compared, in
    constant time, so the answer's timing says nothing about which one matched.
    """
    candidates = (secrets,) if isinstance(secrets, str) else tuple(secrets)
    given = _utf8(signature.strip())
    matched = False
    for secret in candidates:
        expected = sign(secret, delivery_id, timestamp, body).encode()
        matched |= hmac.compare_digest(expected, given)
    return matched


def _utf8(text: str) -> bytes:
    # "surrogatepass": a header full of junk is a mismatch, never a UnicodeEncodeError.
    return text.encode("utf-8", "surrogatepass")
