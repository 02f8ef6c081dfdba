"""examples/train_model.py's pieces: the synthetic data, training, the request body, the CLI,
and the promotion gate (its conditions and the data fingerprint)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from examples import train_model
from examples.train_model import (
    FEATURES,
    Condition,
    fingerprint,
    make_transactions,
    parse_args,
    parse_condition,
    sample_request,
    train,
)


def test_transactions_have_twenty_named_float_features_and_about_two_percent_fraud() -> None:
    frame, labels = make_transactions(20_000, seed=3)

    assert list(frame.columns) == list(FEATURES) and len(FEATURES) == 20
    assert {"amount", "hour", "merchant_risk"} <= set(FEATURES)
    assert all(dtype == np.float64 for dtype in frame.dtypes)
    assert frame.shape == (20_000, 20) and labels.shape == (20_000,)
    assert set(np.unique(labels)) == {0, 1}
    assert 0.015 < labels.mean() < 0.025
    assert not frame.isna().any().any()


def test_transactions_are_reproducible_and_differ_by_seed() -> None:
    a, labels_a = make_transactions(500, seed=1)
    b, labels_b = make_transactions(500, seed=1)
    c, _ = make_transactions(500, seed=2)

    assert a.equals(b) and np.array_equal(labels_a, labels_b)
    assert not a.equals(c)


def test_train_scores_the_held_out_rows_and_seeds_give_different_forests() -> None:
    frame, labels = make_transactions(6_000, seed=1)
    first = train(frame, labels, n_estimators=10, seed=1)
    second = train(frame, labels, n_estimators=10, seed=2)

    assert first.metrics["roc_auc"] > 0.85
    assert 0 < first.metrics["precision"] <= 1 and 0 < first.metrics["recall"] <= 1
    assert len(first.model.estimators_) == 10
    assert list(first.input_example.columns) == list(FEATURES)
    rows = frame.head(200)
    assert not np.allclose(first.model.predict_proba(rows), second.model.predict_proba(rows))


def test_sample_request_is_a_dataframe_split_body_with_the_features() -> None:
    body = sample_request(3)["dataframe_split"]

    assert isinstance(body, dict)
    assert body["columns"] == list(FEATURES)
    assert len(body["data"]) == 3 and all(len(row) == 20 for row in body["data"])
    json.dumps(body)  # what a client sends must serialise


def test_cli_defaults_and_stage_flags() -> None:
    args = train_model.parse_args(["--stage", "Staging", "--alias", "a", "--alias", "b"])

    assert args.model_name == "fraud_detection_model" and args.n_estimators == 50
    assert args.stage == "Staging" and args.alias == ["a", "b"] and args.archive_existing
    assert not train_model.parse_args(["--no-archive-existing"]).archive_existing
    with pytest.raises(SystemExit):
        train_model.parse_args(["--n-estimators", "0"])


# -- the promotion gate -----------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("roc_auc>=0.95", Condition("roc_auc", ">=", 0.95)),
    (" recall > 0.5 ", Condition("recall", ">", 0.5)),
    ("train_seconds<=1e1", Condition("train_seconds", "<=", 10.0)),
    ("precision<1", Condition("precision", "<", 1.0)),
    ("rows==20000", Condition("rows", "==", 20000.0)),
])
def test_conditions_parse(text: str, expected: Condition) -> None:
    assert parse_condition(text) == expected


@pytest.mark.parametrize("text", ["roc_auc", "roc_auc=>0.9", ">=0.9", "roc_auc>=high", ""])
def test_bad_conditions_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a condition"):
        parse_condition(text)


def test_a_condition_holds_in_its_direction() -> None:
    at_least = parse_condition("roc_auc>=0.95")
    assert at_least.holds(0.95) and not at_least.holds(0.9499)
    assert at_least.higher_is_better is True
    assert parse_condition("train_seconds<5").higher_is_better is False
    assert parse_condition("rows==5").higher_is_better is None


def test_the_fingerprint_follows_the_data() -> None:
    frame, labels = make_transactions(500, seed=1)
    assert fingerprint(frame, labels) == fingerprint(frame.copy(), labels.copy())
    assert fingerprint(frame, labels) != fingerprint(*make_transactions(500, seed=2))
    assert fingerprint(frame, labels) != fingerprint(frame, 1 - labels)


def test_the_gate_refuses_production_as_the_first_stage(capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--stage", "Production", "--promote-if", "roc_auc>=0.9"])
    assert "--stage Staging" in capsys.readouterr().err
    assert parse_args(["--promote-if", "roc_auc>=0.9"]).conditions == [
        Condition("roc_auc", ">=", 0.9)]
