"""A part's charts as PNGs beside the report: curves read faster than tables.

matplotlib comes with MLflow (the full `mlflow` package depends on it), so the benchmark needs
no package of its own for it. The object API (`Figure`), not pyplot: no backend to pick and
no global state.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    NullFormatter,
    NullLocator,
    ScalarFormatter,
)

from bench.result import Chart


def draw(chart: Chart, path: Path) -> Path:
    """`chart` as a PNG at `path`: x on a log scale, ticked at the points measured."""
    figure = Figure(figsize=(7, 4.2), dpi=110, layout="constrained")
    axes = figure.add_subplot()
    xs: set[float] = set()
    for label, points in chart.series.items():
        shown = sorted(points)
        if not shown:
            continue
        xs.update(x for x, _ in shown)
        axes.plot([x for x, _ in shown], [y for _, y in shown], marker="o", label=label)
    if chart.reference is not None:
        value, label = chart.reference
        axes.axhline(value, color="grey", linestyle="--", linewidth=1, label=label)
    axes.set_xscale("log")
    if chart.log_y:
        axes.set_yscale("log")
        axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())
    else:
        axes.set_ylim(bottom=0)
    axes.xaxis.set_major_locator(FixedLocator(sorted(xs)))
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xlabel(chart.x_label)
    axes.set_ylabel(chart.y_label)
    axes.set_title(chart.title, fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
