"""The local stack's plumbing, shared by the demo, the tests and the benchmark.

Start a process in a session of its own (so stopping it ends its whole group: `mlflow server`
runs its workers as children), wait for it with a deadline, stop it, read its Prometheus
metrics, and promote a model version. One implementation of each, imported everywhere; it
lives in examples/ because the demo must not import tests/.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import requests
from prometheus_client.parser import text_string_to_metric_families

# promote() and set_alias() are the trainer's own: examples/train_model.py runs standalone in
# the container image, so it cannot import this module; every other caller imports them here.
from examples.train_model import promote, set_alias

__all__ = [
    "Process", "free_port", "group_pids", "metric", "pid_running", "port_open", "promote",
    "scrape", "set_alias", "signals_deferred", "spawn", "spawn_server", "start_mlflow_server",
    "start_receiver", "wait_until", "wait_up",
]

T = TypeVar("T")


# -- processes --------------------------------------------------------------------------------

@dataclass
class Process:
    name: str
    url: str
    port: int
    popen: subprocess.Popen[bytes]
    log_path: Path
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def group_pids(self) -> list[int]:
        """Every live process in this process's group (its leader first)."""
        return group_pids(self.pid)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the whole group, then SIGKILL to whatever is left after `timeout`."""
        _killpg(self.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)
        # Workers may outlive their leader for a moment; the group is done only when empty.
        deadline = time.monotonic() + timeout
        while group_pids(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        lingering = group_pids(self.pid)
        if lingering:  # a shutdown that hangs is a defect to see, not only to kill
            warnings.warn(f"{self.name} at {self.url}: still running {timeout:g} s after "
                          f"SIGTERM, killed: {[_describe(pid) for pid in lingering]}",
                          stacklevel=2)
        _killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        """Hard stop, as a crash would: SIGKILL to the whole group."""
        _killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=15)


def spawn(name: str, argv: list[str], env: Mapping[str, str], log_path: Path, port: int,
          host: str = "127.0.0.1", cwd: Path | None = None) -> Process:
    """Start `argv` in a new session with its output in `log_path`; returns at once."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    return Process(name, f"http://{host}:{port}", port, popen, log_path, host, dict(env))


def wait_up(process: Process, path: str, timeout: float) -> None:
    """Return once `path` answers below 500; raise with the log's end when the process exits
    first or `timeout` passes."""
    def up_or_exited() -> bool:
        # wait_until takes exceptions as "not yet": an exit has to end the wait by returning.
        if not process.alive():
            return True
        return requests.get(process.url + path, timeout=1).status_code < 500

    try:
        wait_until(up_or_exited, timeout=timeout, interval=0.1,
                   message=f"{process.name} up at {process.url}")
    except TimeoutError as exc:
        raise RuntimeError(f"{process.name} did not start: {exc}; log:\n"
                           f"{process.log()[-4000:]}") from None
    if not process.alive():
        raise RuntimeError(f"{process.name} exited with {process.popen.returncode}:\n"
                           f"{process.log()[-4000:]}")


def spawn_server(name: str, argv: list[str], env: Mapping[str, str], log_path: Path,
                 host: str, port: int, health_path: str, timeout: float,
                 cwd: Path | None = None) -> Process:
    """`spawn`, then `wait_up`; the process is stopped if it does not come up."""
    process = spawn(name, argv, env, log_path, port, host, cwd)
    try:
        wait_up(process, health_path, timeout)
    except BaseException:
        process.stop()
        raise
    return process


def start_mlflow_server(workdir: Path, backend_uri: str | None = None,
                        registry_uri: str | None = None, port: int | None = None,
                        workers: int = 1, extra_env: Mapping[str, str] | None = None,
                        timeout: float = 90.0, wait: bool = True) -> Process:
    """A real `mlflow server` on 127.0.0.1 with the hotswap plugin as its registry store;
    its database, artifacts and log in `workdir`.

    `registry_uri` defaults to `hotswap+<backend_uri>`; pass the backend URI itself for the
    plain store. With `wait=False` it returns at once; `wait_up(process, "/health", ...)` later.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    backend_uri = backend_uri or f"sqlite:///{workdir / 'mlflow.db'}"
    registry_uri = registry_uri or f"hotswap+{backend_uri}"
    port = port or free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    argv = [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend_uri, "--registry-store-uri", registry_uri,
            "--artifacts-destination", str(workdir / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    log_path = workdir / "mlflow-server.log"
    if not wait:
        return spawn("mlflow server", argv, env, log_path, port, cwd=workdir)
    return spawn_server("mlflow server", argv, env, log_path, "127.0.0.1", port, "/health",
                        timeout, cwd=workdir)


def start_receiver(workdir: Path, tracking_uri: str, model_name: str,
                   env: Mapping[str, str] | None = None, host: str = "127.0.0.1",
                   port: int | None = None, timeout: float = 90.0,
                   log_name: str = "receiver.log", wait: bool = True) -> Process:
    """The real receiver (`python -m receiver`) under uvicorn; by default returned once
    /health/live answers (it serves nothing until a version is at its stage or alias)."""
    port = port or free_port(host)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": tracking_uri,
                "MODEL_NAME": model_name, **(env or {})}
    argv = [sys.executable, "-m", "receiver", "--host", host, "--port", str(port)]
    if not wait:
        return spawn("receiver", argv, full_env, workdir / log_name, port, host, cwd=workdir)
    return spawn_server("receiver", argv, full_env, workdir / log_name, host, port,
                        "/health/live", timeout, cwd=workdir)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them.

    Around starting a process and recording it, so that a Ctrl-C can never fall between the
    two and leave something running that nobody stops. (Not a signal mask: children inherit
    masks, and a server that ignores SIGTERM can only be killed.)
    """
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])


def group_pids(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is `pgid`, from /proc."""
    found = []
    for pid in _all_pids():
        state, group = _stat(pid)
        if group == pgid and state not in ("Z", "X"):
            found.append(pid)
    return sorted(found, key=lambda pid: pid != pgid)


def pid_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie does not count)."""
    state = _stat(pid)[0]
    return state not in ("", "Z", "X")


def _describe(pid: int) -> str:
    """`pid`, its state and command line, for a message."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        command = "?"
    return f"{pid} ({_stat(pid)[0] or 'gone'}) {command}"


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _stat(pid: int) -> tuple[str, int]:
    """(state, process group) of `pid`; ("", -1) when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command may hold spaces and parentheses: the fields start after the last ')'.
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "", -1
    return fields[0], int(fields[2])


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# -- ports and waiting ------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on `port`."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], T | None], timeout: float, interval: float = 0.05,
               message: str = "condition") -> T:
    """Call `check` until it returns something truthy, and return that; exceptions and None
    count as "not yet"."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - a probe fails until the server is up
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{message} not met within {timeout:.0f}s"
                               + (f" (last error: {last_error!r})" if last_error else ""))
        time.sleep(interval)


# -- metrics ----------------------------------------------------------------------------------

def scrape(url: str, prefix: str = "hotswap_") -> dict[str, float]:
    """A server's /metrics samples named `prefix...` as {'name{label="value",...}': value},
    labels sorted; the `_created` timestamps left out."""
    samples: dict[str, float] = {}
    text = requests.get(url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(prefix) and not sample.name.endswith("_created"):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[sample.name + (f"{{{labels}}}" if labels else "")] = float(sample.value)
    return samples


def metric(url: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """One sample from a server's /metrics: the first named `name` whose labels include
    `labels`; 0 when there is none."""
    text = requests.get(url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and dict(labels or {}).items() <= sample.labels.items():
                return float(sample.value)
    return 0.0
