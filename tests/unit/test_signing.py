from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid

import pytest

from mlflow_hotswap_plugin import signing
from mlflow_hotswap_plugin.signing import parse_secrets, sign, verify

BODY = b'{"entity": "model_version", "action": "deleted", "data": {}}'


def test_signature_is_mlflows_native_v1() -> None:
    expected = hmac.new(b"s3cret", b"id-1.1700000000." + BODY, hashlib.sha256).digest()
    assert sign("s3cret", "id-1", "1700000000", BODY) == (
        "v1," + base64.b64encode(expected).decode())


def test_a_single_secret_verifies_as_before() -> None:
    signature = sign("s3cret", "id-1", "1700000000", BODY)
    assert verify("s3cret", "id-1", "1700000000", BODY, signature)
    assert verify("s3cret", "id-1", "1700000000", BODY, f"  {signature} ")
    assert not verify("other", "id-1", "1700000000", BODY, signature)
    # A string is one secret, never split: a comma may be part of it.
    comma = sign("a,b", "id-1", "1700000000", BODY)
    assert verify("a,b", "id-1", "1700000000", BODY, comma)
    assert not verify("a,b", "id-1", "1700000000", BODY, sign("a", "id-1", "1700000000", BODY))


@pytest.mark.parametrize("secrets", [("new", "old"), ["old", "new"], iter(["x", "old"])])
def test_any_of_several_secrets_verifies(secrets: object) -> None:
    signature = sign("old", "id-2", "1700000001", BODY)
    assert verify(secrets, "id-2", "1700000001", BODY, signature)  # type: ignore[arg-type]


def test_nothing_verifies_against_no_secret_or_a_changed_delivery() -> None:
    signature = sign("s3cret", "id-3", "1700000002", BODY)
    assert not verify((), "id-3", "1700000002", BODY, signature)
    assert not verify(("s3cret",), "id-4", "1700000002", BODY, signature)
    assert not verify(("s3cret",), "id-3", "1700000003", BODY, signature)
    assert not verify(("s3cret",), "id-3", "1700000002", BODY + b" ", signature)


@pytest.mark.parametrize("junk", ["", "v1,", "v1,@@@", "\udcff", "\ud800x", "é" * 10_000, "v1"])
def test_junk_signatures_and_headers_are_a_mismatch_not_an_error(junk: str) -> None:
    assert verify(("s3cret", "other"), junk, junk, BODY, junk) is False


def test_parse_secrets_reads_a_comma_separated_list() -> None:
    assert parse_secrets(None) == ()
    assert parse_secrets("") == ()
    assert parse_secrets(" , ,") == ()
    assert parse_secrets("only") == ("only",)
    assert parse_secrets(" new , old ,") == ("new", "old")


def test_headers_sign_a_fresh_delivery_that_verify_accepts() -> None:
    headers = signing.headers(BODY, "s3cret")
    delivery_id = headers[signing.DELIVERY_ID_HEADER]
    uuid.UUID(delivery_id, version=4)
    assert abs(int(headers[signing.TIMESTAMP_HEADER]) - time.time()) < 60
    assert verify("s3cret", delivery_id, headers[signing.TIMESTAMP_HEADER], BODY,
                  headers[signing.SIGNATURE_HEADER])
    assert signing.headers(BODY, "s3cret")[signing.DELIVERY_ID_HEADER] != delivery_id


def test_headers_keep_a_given_id_and_time_and_sign_nothing_without_a_secret() -> None:
    assert signing.headers(BODY, "s3cret", "id-1", 1700000000) == {
        signing.DELIVERY_ID_HEADER: "id-1", signing.TIMESTAMP_HEADER: "1700000000",
        signing.SIGNATURE_HEADER: sign("s3cret", "id-1", "1700000000", BODY)}
    assert signing.headers(BODY, None, "id-1", "1700000000") == {
        signing.DELIVERY_ID_HEADER: "id-1", signing.TIMESTAMP_HEADER: "1700000000"}
