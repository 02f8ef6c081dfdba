"""The Markdown report: machine, commands, then each part's figures next to their targets."""

from __future__ import annotations

import datetime

from bench.config import Config
from bench.result import PartResult, table


def render(results: list[PartResult], *, cfg: Config, machine: dict[str, str],
           started_at: datetime.datetime, total: float, command: str, wrk_status: str,
           setup: dict[str, float], commands: dict[str, str],
           receiver_src: object = None, merged: str = "", merged_from: str = "") -> str:
    out: list[str] = []
    kind = "smoke run (a few seconds per part: figures prove it runs, not how fast)" \
        if cfg.smoke else "full run"
    out += [
        "# mlflow-hotswap benchmark report",
        "",
        f"- Date: {started_at:%Y-%m-%d %H:%M} UTC; {kind}; took {total / 60:.1f} min",
        *([f"- Parts {merged} come from an earlier run ({merged_from}); each part's section "
           "says when it ran and the load average then."] if merged else []),
        f"- Machine: `nproc` = {machine['nproc']}, CPU: {machine['cpu']}, "
        f"memory {machine['memory']}; load average {machine.get('loadavg_start', '?')} at the "
        f"start, {machine['loadavg']} at the end (anything else running on the 2 cores moves "
        "the figures)",
        f"- Software: Python {machine['python']}, MLflow {machine['mlflow']}, "
        f"scikit-learn {machine['scikit-learn']}, uvicorn {machine['uvicorn']}, "
        f"{machine['wrk']} ({wrk_status})",
        f"- Model: examples/train_model.py's fraud-detection RandomForest, "
        f"{cfg.n_estimators} trees, 20 features, trained on {cfg.train_rows:,} rows; "
        f"{cfg.versions} versions (seeds 1-{cfg.versions}) registered through the plugin",
        "- Everything on 127.0.0.1; every load run bounded in time.",
        *([f"- **Receivers run from `{receiver_src}`, not this checkout's `receiver/`.**"]
          if receiver_src else []),
        "",
        "## Commands",
        "",
        "```bash",
        f"./scripts/bench.sh{'' if not cfg.smoke else ' --smoke'}   # = {command}",
        f"# mlflow server:       {commands.get('mlflow server', '')}",
        f"# receiver:            {commands.get('receiver', '')}",
        f"# mlflow models serve: {commands.get('mlflow models serve', '')}",
        "```",
        "",
        "Environment of the servers: `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`, "
        "`MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true`; the MLflow server with "
        "`HOTSWAP_TARGETS` (the receivers' `/webhooks/mlflow`) and `HOTSWAP_WEBHOOK_SECRET`; "
        "receivers with `MODEL_NAME=fraud_detection_model` and the stage or alias each part "
        "names.",
        "",
        "Setup: " + ", ".join(f"{k} {v:.1f} s" for k, v in setup.items()) + ".",
        "",
        "## Summary",
        "",
    ]
    summary_rows = []
    for r in results:
        if r.error:
            summary_rows.append([f"{r.number}. {r.title}", "ERROR", r.error, ""])
        for f in r.figures:
            summary_rows.append([f"{r.number}. {r.title}", f.name, f.value,
                                 f"{f.target} {f.verdict}".strip()])
    out += [table(["part", "figure", "measured", "target"], summary_rows), ""]
    for r in results:
        out += render_part(r)
    return "\n".join(out).rstrip() + "\n"


def render_part(r: PartResult, ran: str = "") -> list[str]:
    """One part's section: its figures, tables, notes and commands."""
    when = f"Ran {r.ran_at} UTC in {r.seconds:.0f} s" if r.ran_at else f"Ran in {r.seconds:.0f} s"
    load = f"; load average {r.load}" if r.load else ""
    out = [f"## {r.number}. {r.title}", "", ran or f"{when}{load}.", ""]
    if r.error:
        out += [f"**Error:** `{r.error}`", ""]
    if r.figures:
        out += [table(["figure", "measured", "target", ""],
                      [[f.name, f.value, f.target, f.verdict] for f in r.figures]), ""]
    for t in r.tables:
        out += [t, ""]
    for note in r.notes:
        out += [f"- {note}"]
    if r.notes:
        out.append("")
    for c in r.commands:
        out += ["```bash", c, "```", ""]
    return out
