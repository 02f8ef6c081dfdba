"""docs/contract.md against the code: every setting, error code and metric the code has is in
the contract, and the contract names none the code lacks."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.metrics_core import Metric

from receiver.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = (ROOT / "docs" / "contract.md").read_text()


def section(title: str) -> str:
    """The text under a `#`-heading named `title`, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#)", CONTRACT + "\n#", re.M | re.S)
    assert match, f"no section {title!r} in docs/contract.md"
    return match.group(1)


def first_cells(text: str) -> list[str]:
    """The first cell of each table row, without the table's header."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [row.split("|")[1].strip() for row in rows[2:]]


def names_in(cell: str) -> set[str]:
    return set(re.findall(r"`([a-z_A-Z]+)`", cell))


def literals(path: str, pattern: str) -> set[str]:
    return set(re.findall(pattern, (ROOT / path).read_text()))


VARIABLE = r'"((?:MLFLOW|MODEL|HOTSWAP)_[A-Z_]+)"'


def test_the_receiver_settings_are_the_ones_it_reads() -> None:
    documented = set().union(*map(names_in, first_cells(section("Receiver settings"))))
    assert documented == literals("receiver/settings.py", VARIABLE)


def test_the_plugin_settings_are_the_ones_it_reads() -> None:
    documented = set().union(*map(names_in, first_cells(section("Plugin settings"))))
    assert documented == literals("mlflow_hotswap_plugin/settings.py", VARIABLE)


def test_every_error_code_the_receiver_answers_is_documented_with_its_status() -> None:
    rows = [line.split("|") for line in section("Errors").splitlines() if line.startswith("|")]
    documented = {(int(row[1]), row[2].strip().strip("`")) for row in rows[2:]}
    answered: set[tuple[int, str]] = set()
    codes: set[str] = set()
    for module in sorted((ROOT / "receiver").glob("*.py")):
        source = module.read_text()
        answered |= {(int(status), code)
                     for status, code in re.findall(r'\b([1-5]\d\d), "([A-Z_]{3,})"', source)}
        for line in source.splitlines():  # a code written beside its key, as JSON
            if '"error_code":' in line:
                codes |= set(re.findall(r'"([A-Z][A-Z_]{2,})"', line))
    assert answered <= documented
    assert {code for _, code in documented} == {code for _, code in answered} | codes


def exported_name(family: Metric) -> str:
    return f"{family.name}_total" if family.type == "counter" else family.name


def test_every_metric_is_documented_and_none_is_missing() -> None:
    exported = {exported_name(family) for family in Metrics().registry.collect()}
    documented = set().union(*map(names_in, first_cells(section("Metrics"))))
    assert documented == exported
