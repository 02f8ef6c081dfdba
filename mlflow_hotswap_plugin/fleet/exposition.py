"""A small reader of Prometheus' text exposition format: the samples the rollout needs, keyed by
name and labels. Small on purpose: the plugin's environment has no Prometheus client."""

from __future__ import annotations

import math
from collections.abc import Iterable

Labels = tuple[tuple[str, str], ...]
Series = tuple[str, Labels]
Samples = dict[Series, float]

_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def series(name: str, **labels: str) -> Series:
    return name, tuple(sorted(labels.items()))


def parse(text: str, names: Iterable[str] | None = None) -> Samples:
    """Every sample in `text` (only those named in `names`, when given); lines that do not
    parse are skipped, as a scraper would rather lose one sample than the whole page."""
    wanted = set(names) if names is not None else None
    samples: Samples = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key, value = _sample(line)
        except ValueError:
            continue
        if wanted is None or key[0] in wanted:
            samples[key] = value
    return samples


def _sample(line: str) -> tuple[Series, float]:
    brace = line.find("{")
    space = line.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        name = line[:brace]
        labels, rest = _labels(line, brace + 1)
    else:
        if space == -1:
            raise ValueError(line)
        name, labels, rest = line[:space], (), line[space:]
    fields = rest.split()
    if not name or not fields:
        raise ValueError(line)
    value = float(fields[0])  # takes +Inf, -Inf and NaN as written by Prometheus
    if math.isnan(value):
        raise ValueError(line)
    return (name, labels), value


def _labels(line: str, at: int) -> tuple[Labels, str]:
    """The `{a="1",b="2"}` block from `at` (just past the brace); returns it and the rest."""
    pairs: list[tuple[str, str]] = []
    while True:
        while at < len(line) and line[at] in " ,":
            at += 1
        if at < len(line) and line[at] == "}":
            return tuple(sorted(pairs)), line[at + 1:]
        equals = line.index("=", at)
        key = line[at:equals].strip()
        if line[equals + 1] != '"':
            raise ValueError(line)
        value, at = _quoted(line, equals + 2)
        pairs.append((key, value))


def _quoted(line: str, at: int) -> tuple[str, int]:
    chars: list[str] = []
    while at < len(line):
        char = line[at]
        if char == "\\" and at + 1 < len(line):
            chars.append(_ESCAPES.get(line[at + 1], "\\" + line[at + 1]))
            at += 2
        elif char == '"':
            return "".join(chars), at + 1
        else:
            chars.append(char)
            at += 1
    raise ValueError(line)
