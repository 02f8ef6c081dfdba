"""Signature, freshness and replay checks on incoming notifications."""

from __future__ import annotations

import json

import pytest

from mlflow_hotswap_plugin import events, signing
from mlflow_hotswap_plugin.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    verify,
)
from receiver.errors import DOMAIN_ERRORS
from receiver.webhooks import InvalidSignature, MalformedNotification, WebhookVerifier

SECRET = "s3cret"
NOW = 1_800_000_000.0


def signed(body: bytes, secret: str = SECRET, timestamp: float = NOW,
           delivery_id: str | None = None) -> dict[str, str]:
    return signing.headers(body, secret, delivery_id, int(timestamp))


BODY = events.stage_transitioned("fraud", "2", "Staging", "Production").to_json()


def verifier(secret: str | None = SECRET) -> WebhookVerifier:
    return WebhookVerifier(secret, max_age=300, clock=lambda: NOW)


def test_signature_matches_mlflow_native_algorithm() -> None:
    # MLflow's own implementation, as in mlflow/webhooks/delivery.py.
    from mlflow.webhooks.delivery import _generate_hmac_signature

    payload = json.dumps({"entity": "model_version_alias", "action": "created", "data": {}})
    theirs = _generate_hmac_signature(SECRET, "id-1", "1700000000", payload)
    assert sign(SECRET, "id-1", "1700000000", payload.encode()) == theirs
    assert verify(SECRET, "id-1", "1700000000", payload.encode(), theirs)


def test_valid_notification_is_accepted_and_names_its_model() -> None:
    notification = verifier().check(signed(BODY), BODY)
    assert notification is not None
    assert (notification.entity, notification.action) == ("model_version", "stage_transitioned")
    assert notification.model_names() == {"fraud"}


def test_rename_names_both_models() -> None:
    body = events.model_renamed("old", "new").to_json()
    notification = verifier().check(signed(body), body)
    assert notification is not None and notification.model_names() == {"old", "new"}


@pytest.mark.parametrize("headers", [
    {},  # unsigned
    signed(BODY, secret="wrong"),
    {**signed(BODY), SIGNATURE_HEADER: "v1,AAAA"},
    {k: v for k, v in signed(BODY).items() if k != TIMESTAMP_HEADER},
])
def test_forged_or_unsigned_is_401(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidSignature) as caught:
        verifier().check(headers, BODY)
    assert DOMAIN_ERRORS[type(caught.value)][0] == 401


def test_tampered_body_is_401() -> None:
    headers = signed(BODY)
    tampered = BODY.replace(b'"2"', b'"1"')
    with pytest.raises(InvalidSignature) as caught:
        verifier().check(headers, tampered)
    assert DOMAIN_ERRORS[type(caught.value)][0] == 401


@pytest.mark.parametrize("age", [301, -301, 3600])
def test_stale_or_future_timestamps_are_401(age: float) -> None:
    with pytest.raises(InvalidSignature) as caught:
        verifier().check(signed(BODY, timestamp=NOW - age), BODY)
    assert DOMAIN_ERRORS[type(caught.value)][0] == 401
    assert "timestamp" in str(caught.value)


def test_a_replayed_delivery_is_a_no_op() -> None:
    check = verifier()
    headers = signed(BODY)
    assert check.check(headers, BODY) is not None
    assert check.check(headers, BODY) is None


def test_without_a_secret_unsigned_notifications_are_accepted() -> None:
    assert verifier(secret=None).check({}, BODY) is not None


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"entity": "x"}'])
def test_signed_but_malformed_body_is_400(raw: bytes) -> None:
    with pytest.raises(MalformedNotification) as caught:
        verifier().check(signed(raw), raw)
    assert DOMAIN_ERRORS[type(caught.value)][0] == 400


@pytest.mark.parametrize("timestamp", ["nan", "NaN", "inf", "-inf", "Infinity", "1e9",
                                       "\u0661\u0668" + "\u0660" * 8, "1_800_000_000",
                                       " 1800000000", "-1800000000", "9" * 400, ""])
def test_timestamps_that_are_not_unix_seconds_are_refused(timestamp: str) -> None:
    # Signed correctly, so only the timestamp's form can refuse it.
    headers = signing.headers(BODY, SECRET, timestamp=timestamp)
    with pytest.raises(InvalidSignature):
        verifier().check(headers, BODY)
    with pytest.raises(InvalidSignature, match="unix seconds"):
        verifier(None).check({TIMESTAMP_HEADER: timestamp or "x"}, BODY)


def test_a_fractional_timestamp_is_unix_seconds() -> None:
    headers = signing.headers(BODY, SECRET, timestamp=f"{NOW}")
    assert verifier().check(headers, BODY) is not None


def test_rotation_any_of_several_secrets_verifies() -> None:
    rotating = verifier("new-secret, s3cret")
    assert rotating.check(signed(BODY, secret="new-secret"), BODY) is not None
    assert rotating.check(signed(BODY, secret=SECRET), BODY) is not None
    with pytest.raises(InvalidSignature):
        rotating.check(signed(BODY, secret="retired"), BODY)


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000,
                                  b'{"data": ' * 50_000 + b"1" + b"}" * 50_000])
def test_a_deeply_nested_body_is_malformed_not_a_crash(body: bytes) -> None:
    with pytest.raises(MalformedNotification):
        verifier().check(signed(body), body)


def test_a_name_that_is_not_a_string_names_no_model() -> None:
    body = b'{"entity": "x", "action": "y", "data": {"name": ["a"], "new_name": {"b": 1}}}'
    notification = verifier().check(signed(body), body)
    assert notification is not None and notification.model_names() == set()
