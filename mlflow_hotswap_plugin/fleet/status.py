"""`mlflow-hotswap status`: one row per replica, as `kubectl get` shows pods; with
`--wait-converged`, waits as `kubectl rollout status` does until every replica serves the same
versions and shares, and says so by its exit code."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from mlflow_hotswap_plugin.fleet.analysis import ERRORS, PREDICTIONS
from mlflow_hotswap_plugin.fleet.replicas import Page, read_all

COLUMNS = ("ADDRESS", "READY", "VERSION", "CANARY", "SHADOW", "LAST SWAP", "PREDICTIONS",
           "ERRORS")


def by_role(page: Page, metric: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (name, labels), value in page.samples.items():
        role = dict(labels).get("role")
        if name == metric and role:
            counts[role] = counts.get(role, 0) + int(value)
    return counts


def _share(described: dict[str, Any] | None) -> str:
    if not described or described.get("version") is None:
        return "-"
    return f"v{described['version']} {described.get('percent') or 0:g} %"


def row(page: Page) -> dict[str, Any]:
    """The replica's row, as --json prints it."""
    model = page.model()
    return {"address": page.replica.address, "reachable": page.reachable,
            "error": page.error, "ready": page.ready, "model": model.get("name"),
            "version": model.get("version"), "canary": model.get("canary"),
            "shadow": model.get("shadow"), "loaded_at": model.get("loaded_at"),
            "predictions": by_role(page, PREDICTIONS), "errors": by_role(page, ERRORS)}


def _cells(page: Page) -> tuple[str, ...]:
    if not page.reachable:
        return (page.replica.address, "down", str(page.error), "", "", "", "", "")
    found = row(page)
    roles = " ".join(f"{role}={count}" for role, count in sorted(found["predictions"].items()))
    errors = " ".join(f"{role}={count}" for role, count in sorted(found["errors"].items()))
    return (found["address"], "yes" if found["ready"] else "no",
            str(found["version"] or "-"), _share(found["canary"]), _share(found["shadow"]),
            _when(found["loaded_at"]), roles or "-", errors or "-")


def _when(loaded_at: str | None) -> str:
    """An ISO time to the second, as the table shows it."""
    if not loaded_at:
        return "-"
    return loaded_at[:19] + ("Z" if loaded_at.endswith(("+00:00", "Z")) else "")


def table(pages: Sequence[Page]) -> str:
    rows = [COLUMNS, *(_cells(page) for page in pages)]
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(cells, widths,
                                                                         strict=True)).rstrip()
                     for cells in rows)


def served(page: Page) -> tuple[Any, ...]:
    """What must be the same on every replica for the fleet to be converged."""
    model = page.model()
    canary, shadow = model.get("canary") or {}, model.get("shadow") or {}
    return (model.get("version"), canary.get("version"), canary.get("percent"),
            shadow.get("version"), shadow.get("percent"))


def converged(pages: Sequence[Page]) -> bool:
    return bool(pages) and all(page.ready for page in pages) and len(
        {served(page) for page in pages}) == 1


def run(urls: Sequence[str], as_json: bool, wait: float | None, out: TextIO,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep) -> int:
    """Print the fleet; 0 when every replica answered (and, with `wait`, converged in time)."""
    deadline = clock() + (wait or 0)
    said = ""
    while True:
        pages = read_all(urls, (PREDICTIONS, ERRORS))
        done = converged(pages) if wait is not None else all(p.reachable for p in pages)
        if wait is None or done or clock() >= deadline:
            break
        waiting = _waiting_line(pages)
        if waiting != said:
            out.write(waiting + "\n")
            out.flush()
            said = waiting
        sleep(0.5)
    out.write((json.dumps([row(page) for page in pages], indent=2) if as_json
               else table(pages)) + "\n")
    if wait is not None and not done:
        out.write(f"not converged within {wait:g} s\n")
    return 0 if done and pages else 1


def _waiting_line(pages: Sequence[Page]) -> str:
    down = sum(1 for page in pages if not page.ready)
    views = len({served(page) for page in pages if page.ready})
    return (f"waiting: {down} of {len(pages)} replicas down or not ready, "
            f"{views} different views among the rest")
