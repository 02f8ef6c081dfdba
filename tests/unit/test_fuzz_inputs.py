"""Property-based fuzzing of everything that reads outside input: the shape check and the
scoring parser, the webhook verifier and the settings readers. For any input the answer is a
value or one of the domain errors errors.py maps to a 4xx, never another exception (which would
be a 500)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.types import ColSpec, Schema

from mlflow_hotswap_plugin import signing
from mlflow_hotswap_plugin.signing import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)
from receiver import scoring, shape
from receiver.errors import DOMAIN_ERRORS
from receiver.settings import Settings, SettingsError
from receiver.webhooks import Notification, WebhookVerifier

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
SCHEMA = Schema([ColSpec("double", "a"), ColSpec("double", "b")])
CLIENT_ERRORS = tuple(kind for kind, (status, _) in DOMAIN_ERRORS.items() if status < 500)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.integers(min_value=10**300, max_value=10**400),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["a", "b", "columns", "data", "index", "params",
                                       *scoring.INPUT_FORMATS]) | st.text(max_size=4),
                      children, max_size=4),
    max_leaves=20)


def deep(depth: int, kind: str) -> bytes:
    opener, closer = ("[", "]") if kind == "list" else ('{"a":', "}")
    return (opener * depth + "1" + closer * depth).encode()


@st.composite
def scoring_bodies(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(st.binary(max_size=200))
    if choice == 1:  # a valid shape with anything inside
        fmt = draw(st.sampled_from(scoring.INPUT_FORMATS))
        return json.dumps({fmt: draw(json_values), **draw(st.sampled_from([{}, {"params": 1}]))}
                          ).encode()
    if choice == 2:  # the fast path's shape, with values that are not plain doubles
        rows = draw(st.lists(st.lists(st.integers() | st.floats() | st.integers(
            min_value=10**300, max_value=10**400), min_size=2, max_size=2), max_size=3))
        return json.dumps({"dataframe_split": {"columns": ["a", "b"], "data": rows}}).encode()
    if choice == 3:
        return deep(draw(st.sampled_from([10, 900, 5_000, 100_000])),
                    draw(st.sampled_from(["list", "dict"])))
    return json.dumps(draw(json_values)).encode()


def outcome_is_value_or_client_error(call: Any, *args: Any) -> None:
    with contextlib.suppress(*CLIENT_ERRORS):
        call(*args)


@FUZZ
@given(body=scoring_bodies(), mime=st.sampled_from([scoring.JSON, scoring.CSV]),
       schema=st.sampled_from([None, SCHEMA]))
def test_scoring_parser_answers_a_value_or_bad_input(body: bytes, mime: str,
                                                     schema: Schema | None) -> None:
    outcome_is_value_or_client_error(shape.check, body, mime, schema)
    outcome_is_value_or_client_error(scoring.parse, body, mime, schema)


@FUZZ
@given(content_type=st.none() | st.text(max_size=40)
       | st.sampled_from(["application/json; charset=utf-8", "text/csv;charset=latin-1",
                          "APPLICATION/JSON", "application/json;", ";", "text/csv; x=y"]))
def test_media_type_answers_a_type_or_415(content_type: str | None) -> None:
    outcome_is_value_or_client_error(scoring.media_type, content_type)


SECRET = "s3cret,old-secret"
NOW = 1_800_000_000.0
header_text = st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=0x2FFF),
                      max_size=30)
timestamps = header_text | st.sampled_from(
    ["nan", "NaN", "inf", "-inf", "1e400", "\u0661\u0668" + "\u0660" * 8, "1_800_000_000",
     str(int(NOW)),
     f"{NOW}", "0x6B49D200", " 1800000000", "9" * 400])


@st.composite
def notifications(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    body = draw(st.binary(max_size=100) | st.builds(lambda v: json.dumps(v).encode(),
                                                       json_values)
                | st.sampled_from([deep(100_000, "list"), deep(2_000, "dict"),
                                   b'{"data": {"name": ["a"], "new_name": {"x": 1}}}']))
    headers: dict[str, str] = {}
    delivery_id = draw(st.none() | header_text)
    timestamp = draw(st.none() | timestamps)
    if delivery_id is not None:
        headers[DELIVERY_ID_HEADER] = delivery_id
    if timestamp is not None:
        headers[TIMESTAMP_HEADER] = timestamp
    if delivery_id is not None and timestamp is not None and draw(st.booleans()):
        secret = draw(st.sampled_from(["s3cret", "old-secret", "wrong"]))
        headers = signing.headers(body, secret, delivery_id, timestamp)
    elif draw(st.booleans()):
        headers[SIGNATURE_HEADER] = draw(header_text)
    return headers, body


@FUZZ
@given(notification=notifications(), secret=st.sampled_from([None, SECRET]))
def test_webhook_verifier_answers_a_notification_or_401_400(
        notification: tuple[dict[str, str], bytes], secret: str | None) -> None:
    headers, body = notification
    verifier = WebhookVerifier(secret, max_age=300, clock=lambda: NOW)
    try:
        result = verifier.check(headers, body)
    except CLIENT_ERRORS:
        return
    assert result is None or isinstance(result, Notification)
    if result is not None:
        assert all(isinstance(n, str) for n in result.model_names())


SETTINGS_KEYS = ["MLFLOW_TRACKING_URI", "MODEL_NAME", "MODEL_STAGE", "MODEL_ALIAS",
                 "MODEL_CACHE_SIZE", "MODEL_UPDATE_INTERVAL", "HOTSWAP_WEBHOOK_SECRET",
                 "HOTSWAP_ADMIN_TOKEN", "HOTSWAP_MAX_BODY_BYTES", "HOTSWAP_PREDICT_THREADS",
                 "HOTSWAP_LOAD_TIMEOUT", "HOTSWAP_MODEL_DIR"]
setting_values = (st.text(max_size=12)
                  | st.sampled_from(["0", "-1", "1", "5", "nan", "inf", "1e999", "\u0663", "1_0",
                                     "9" * 5000, " 3 ", "http://u:p@h", ","])
                  | st.integers(-10, 10**6).map(str) | st.floats().map(str))


@FUZZ
@given(env=st.dictionaries(st.sampled_from(SETTINGS_KEYS), setting_values, max_size=12))
def test_settings_readers_answer_settings_or_a_settings_error(env: dict[str, str]) -> None:
    try:
        read = Settings.from_env(env)
    except SettingsError as exc:
        assert any(key in str(exc) for key in SETTINGS_KEYS)
        return
    assert read.model_names and read.cache_size >= 1 and read.load_timeout > 0
    assert 0 < read.update_interval < float("inf")
    text = repr(read)
    for name in ("webhook_secret", "admin_token"):
        secret = getattr(read, name)
        if secret:
            assert f"{name}={secret!r}" not in text
