"""`python -m bench`: run the benchmark's parts and write a Markdown report.

    python -m bench                 # full run (about 10-15 minutes), writes bench/REPORT.md
    python -m bench --smoke         # a few seconds per part, writes bench/out/REPORT-smoke.md
    python -m bench --parts 1,3     # only some parts
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from bench import (
    fanout,
    fleet,
    memory,
    overload,
    promotion,
    registry_cost,
    storm,
    swap,
    throughput,
    v2,
    workers,
)
from bench.config import Config
from bench.report import render
from bench.result import PartResult
from bench.stack import Stack, machine
from examples.processes import Process

ROOT = Path(__file__).resolve().parents[1]
PARTS: dict[int, tuple[str, Callable[[Stack, Config], PartResult]]] = {
    1: ("Promotion to serving", promotion.run),
    2: ("Swap under load", swap.run),
    3: ("Throughput and latency against `mlflow models serve`", throughput.run),
    4: ("Memory", memory.run),
    5: ("Cost to the registry", registry_cost.run),
    6: ("Notification storm", storm.run),
    7: ("Fan-out to 1,000 replicas behind one name", fanout.run),
    8: ("Worker processes", workers.run),
    9: ("Overload: goodput at 1,000 clients", overload.run),
    10: ("Progressive delivery", fleet.run),
    11: ("Open Inference Protocol", v2.run),
    13: ("Apache Beam", lambda stack, cfg: _beam().run(stack, cfg)),
}


def _beam() -> ModuleType:
    """bench.beam, imported only when its part runs: Apache Beam is an optional extra."""
    return importlib.import_module("bench.beam")


def ensure_wrk(install: bool) -> str:
    """wrk from Debian's packages, installed if missing and we may (root with apt-get)."""
    if shutil.which("wrk"):
        return "present"
    if not install:
        return "absent (not installed: using the threaded Python client)"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "absent (cannot apt-get install here: using the threaded Python client)"
    print("==> installing wrk (apt-get install wrk)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return f"absent (apt-get failed: {done.stderr.strip()[-200:]})"
    return "installed by this run (apt-get install wrk)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few seconds per part")
    parser.add_argument("--parts", default=",".join(map(str, PARTS)),
                        help="comma-separated part numbers")
    parser.add_argument("--report", type=Path, default=None,
                        help="Markdown report path (default bench/REPORT.md, or "
                             "bench/out/REPORT-smoke.md with --smoke)")
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where servers keep their data (default: a fresh temp folder)")
    parser.add_argument("--receiver-src", type=Path, default=None,
                        help="run receivers from this folder's receiver/ package instead "
                             "(to measure a candidate change before it lands)")
    parser.add_argument("--merge", type=Path, default=None, metavar="JSON",
                        help="an earlier run's --json: its parts not run now go into the "
                             "report too, each saying when it ran")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install wrk when it is missing")
    args = parser.parse_args(argv)
    parts = [int(p) for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; parts are {min(PARTS)}-{max(PARTS)}")
    cfg = Config.quick() if args.smoke else Config.full()
    report_path = args.report or (ROOT / "bench" / "out" / "REPORT-smoke.md" if args.smoke
                                  else ROOT / "bench" / "REPORT.md")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    wrk_status = ensure_wrk(install=not (args.no_install or args.smoke))

    load_at_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    began = time.perf_counter()
    started_at = datetime.datetime.now(datetime.timezone.utc)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="hotswap-bench-"))
    stack = Stack(cfg, workdir, receiver_src=args.receiver_src.resolve()
                  if args.receiver_src else None)
    results: list[PartResult] = []
    print(f"==> bench ({'smoke' if args.smoke else 'full'}) in {workdir}", flush=True)
    try:
        stack.start(with_baseline=bool({2, 3} & set(parts)))
        print(f"==> stack up: {', '.join(f'{k} {v:.1f}s' for k, v in stack.setup_seconds.items())}",
              flush=True)
        for number in parts:
            title, run = PARTS[number]
            print(f"==> part {number}: {title}", flush=True)
            part_began = time.perf_counter()
            load_before = os.getloadavg()[0]
            ran_at = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}"
            try:
                result = run(stack, cfg)
            except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
                result = PartResult(number, title, error=f"{type(exc).__name__}: {exc}")
                traceback.print_exc()
            result.seconds = time.perf_counter() - part_began
            result.ran_at = ran_at
            result.load = f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
            results.append(result)
            for figure in result.figures:
                print(f"    {figure.name}: {figure.value}"
                      + (f"  [target {figure.target}: {figure.verdict}]" if figure.met is not None
                         else ""), flush=True)
            if result.error:
                print(f"    ERROR: {result.error}", flush=True)
    finally:
        commands = {
            "mlflow server": command_line(stack.mlflow) if stack.mlflow else "",
            "receiver": command_line(next(iter(stack.receivers.values())))
            if stack.receivers else "",
        }
        stack.stop()
    total = time.perf_counter() - began
    earlier = merged_parts(args.merge, {r.number for r in results})
    results = sorted(results + earlier, key=lambda r: r.number)
    bench_cmd = "python -m bench" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    text = render(results, cfg=cfg, machine={**machine(), "loadavg_start": load_at_start},
                  started_at=started_at, total=total, command=bench_cmd, wrk_status=wrk_status,
                  receiver_src=args.receiver_src, setup=stack.setup_seconds,
                  merged=", ".join(str(r.number) for r in earlier),
                  merged_from=str(args.merge) if args.merge else "",
                  commands={**commands,
                            "mlflow models serve": shlex.join(stack.baseline_argv("<V>", 0))
                            .replace("--port 0", "--port <port>")})
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(text)
    print(f"==> wrote {report_path} ({total:.0f}s)", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if any(r.error for r in results) else 0


def merged_parts(path: Path | None, ran: set[int]) -> list[PartResult]:
    """The parts of an earlier run's JSON that this run did not run again."""
    if path is None:
        return []
    earlier = [PartResult.from_json(data) for data in json.loads(path.read_text())]
    return [result for result in earlier if result.number not in ran]


def command_line(process: Process) -> str:
    args = process.popen.args
    return shlex.join(map(str, args)) if isinstance(args, list) else str(args)


if __name__ == "__main__":
    sys.exit(main())
