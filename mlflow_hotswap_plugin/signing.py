"""Sign and verify notifications exactly as MLflow's native webhooks do.

Standard library only: the receiver imports this module too, so one function verifies both
our plugin's notifications and MLflow's own webhooks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
SIGNATURE_VERSION = "v1"


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """Return the header value `v1,<base64 HMAC-SHA256(secret, "{id}.{ts}.{body}")>`."""
    signed = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify(secret: str, delivery_id: str, timestamp: str, body: bytes, signature: str) -> bool:
    """True when `signature` is a valid v1 signature of this delivery; constant-time compare."""
    expected = sign(secret, delivery_id, timestamp, body)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())
