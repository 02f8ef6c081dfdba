"""The training gate's pieces in examples/train_model.py: conditions and the data fingerprint."""

from __future__ import annotations

import pytest

from examples.train_model import (
    Condition,
    fingerprint,
    make_transactions,
    parse_args,
    parse_condition,
)


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
