"""Credentials never leave the process: URIs, MLflow's error texts, log lines, reprs."""

from __future__ import annotations

import logging

import pytest

from receiver import redact
from receiver.__main__ import exposure_warnings
from receiver.settings import Settings

URI = "http://alice:hunter2-pw@mlflow.internal:5000"


@pytest.mark.parametrize("given, shown", [
    (URI, "http://alice:***@mlflow.internal:5000"),
    ("https://tok@host/path", "https://tok:***@host/path"),
    ("http://host:5000", "http://host:5000"),
    ("databricks", "databricks"),
    ("http://u:p%40ss@h/api?x=1", "http://u:***@h/api?x=1"),
])
def test_uri_masks_the_password(given: str, shown: str) -> None:
    assert redact.uri(given) == shown


def test_scrub_masks_urls_inside_mlflow_error_texts() -> None:
    text = (f"API request to endpoint {URI}/api/2.0/mlflow/registered-models/get failed "
            f"with exception HTTPConnectionPool(host='mlflow.internal', port=5000)")
    cleaned = redact.scrub(text)
    assert "hunter2" not in cleaned
    assert "http://alice:***@mlflow.internal:5000/api/2.0" in cleaned


def test_settings_repr_hides_secrets_and_passwords() -> None:
    settings = Settings(tracking_uri=URI, registry_uri=URI, model_names=("m",),
                        webhook_secret="whsec-one,whsec-two", admin_token="adm1n-t0ken")
    text = repr(settings)
    for secret in ("hunter2", "whsec-one", "whsec-two", "adm1n-t0ken"):
        assert secret not in text
    assert "webhook_secret='***'" in text and "model_names=('m',)" in text
    assert "admin_token=None" in repr(Settings(tracking_uri="x", model_names=("m",)))


def test_log_filter_scrubs_messages_arguments_and_tracebacks() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(redact.ScrubFilter())
    logger = logging.getLogger("test.redact")
    logger.addHandler(handler)
    try:
        logger.error("Serving from %s", URI)
        try:
            raise ConnectionError(f"could not reach {URI}/api")
        except ConnectionError:
            logger.exception("refresh failed")
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2
    assert all("hunter2" not in r for r in records)
    assert "alice:***@" in records[0] and "ConnectionError" in records[1]


@pytest.mark.parametrize("host, secret, token, expected", [
    ("127.0.0.1", None, None, []),
    ("localhost", None, None, []),
    ("::1", None, None, []),
    ("0.0.0.0", None, None, ["HOTSWAP_WEBHOOK_SECRET", "HOTSWAP_ADMIN_TOKEN"]),
    ("0.0.0.0", "s", None, ["HOTSWAP_ADMIN_TOKEN"]),
    ("10.1.2.3", "s", "t", []),
    ("receiver.example", None, "t", ["HOTSWAP_WEBHOOK_SECRET"]),
])
def test_a_loud_warning_when_exposed_without_secret_or_token(
        host: str, secret: str | None, token: str | None, expected: list[str]) -> None:
    settings = Settings(tracking_uri="x", model_names=("m",), webhook_secret=secret,
                        admin_token=token)
    warnings = exposure_warnings(host, settings)
    assert len(warnings) == len(expected)
    for warning, variable in zip(warnings, expected, strict=True):
        assert warning.startswith("SECURITY:") and variable in warning
