from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from mlflow_hotswap_plugin import compat, events, exit_hooks
from mlflow_hotswap_plugin.notifier import Notifier
from mlflow_hotswap_plugin.settings import Settings
from mlflow_hotswap_plugin.store import HotswapRegistryStore
from tests.support.capture import capture_server

ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_plugin_installs_no_hook() -> None:
    script = ("import atexit, os, signal, mlflow, sqlalchemy, urllib3\n"
              "before, exits = signal.getsignal(signal.SIGTERM), atexit._ncallbacks()\n"
              "import mlflow_hotswap_plugin.store, mlflow_hotswap_plugin.cli\n"
              "assert signal.getsignal(signal.SIGTERM) is before, 'SIGTERM handler replaced'\n"
              "assert atexit._ncallbacks() == exits, 'atexit hook added'\n"
              "from mlflow_hotswap_plugin import exit_hooks\n"
              "assert exit_hooks.watched() == []\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_the_store_installs_the_hooks_and_restores_them_when_it_closes(
        tmp_path: Path) -> None:
    def previous(signum: int, frame: object) -> None:
        pass

    original = signal.signal(signal.SIGTERM, previous)
    try:
        store = HotswapRegistryStore(
            f"hotswap+sqlite:///{tmp_path / 'x.db'}",
            settings=Settings(targets=("http://receiver.invalid/webhooks/mlflow",)))
        assert exit_hooks.watched() == [store.notifier]
        assert signal.getsignal(signal.SIGTERM) is not previous
        store.close(timeout=0)
        assert exit_hooks.watched() == []
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, original)


def test_a_store_with_no_targets_installs_nothing(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    HotswapRegistryStore(f"hotswap+sqlite:///{tmp_path / 'y.db'}", settings=Settings())
    assert exit_hooks.watched() == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_hooks_stay_while_any_notifier_is_watched() -> None:
    one, two = (Notifier(Settings(targets=("http://r.invalid/h",))) for _ in range(2))
    before = signal.getsignal(signal.SIGTERM)
    exit_hooks.watch(one)
    exit_hooks.watch(two)
    exit_hooks.unwatch(one)
    assert exit_hooks.watched() == [two]
    if before not in (None, signal.SIG_IGN):
        assert signal.getsignal(signal.SIGTERM) is not before
    exit_hooks.unwatch(two)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_child_forked_while_workers_run_starts_its_own() -> None:
    with capture_server() as capture:
        note = Notifier(Settings(targets=(capture.url,)))
        exit_hooks.watch(note)
        note.emit(events.model_deleted("parent"))
        assert note.flush(10)
        assert note.workers > 0  # idle, waiting for work: its thread is not in the child
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code only
            code = 1
            try:
                note.emit(events.model_deleted("child"))
                code = 0 if note.flush(10) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        capture.wait_for("registered_model.deleted", where=lambda d: d.data["name"] == "child")


def test_the_main_thread_is_reached_from_where_mlflow_builds_the_store() -> None:
    # MLflow 3.x builds the store in a request, in an anyio worker thread of uvicorn's loop.
    reached: list[threading.Thread] = []

    def from_a_worker_thread() -> bool:
        return compat.call_in_main_thread(lambda: reached.append(threading.current_thread()))

    async def serve() -> bool:
        return await anyio.to_thread.run_sync(from_a_worker_thread)

    assert anyio.run(serve) is True
    assert reached == [threading.main_thread()]
    plain: list[bool] = []
    thread = threading.Thread(target=lambda: plain.append(from_a_worker_thread()))
    thread.start()
    thread.join(10)
    assert plain == [False] and len(reached) == 1


@pytest.fixture(autouse=True)
def _nothing_watched_after() -> Iterator[None]:
    yield
    for notifier in exit_hooks.watched():
        exit_hooks.unwatch(notifier)
