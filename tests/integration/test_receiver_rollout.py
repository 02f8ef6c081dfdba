"""Staged rollout against a real `mlflow server` with the plugin, so every registry
change is pushed: receivers poll only every 600 s, so whatever they pick up within a test's
deadline came by notification.

- `staged`: follows Production and pre-warms Staging.
- `rollout`: follows Production with a 20 % canary and a 100 % shadow, both at @challenger.
  Its challenger starts as an inverted model (trained on flipped labels), so a shadow or canary
  answer leaking into a primary one would show.
- `tagged`: follows Production with a canary at @challenger whose share is the registered
  model's tag `hotswap.canary_percent`; a tag set or deleted reaches it by push, like any other
  registry change.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import requests
from mlflow import MlflowClient

from examples.processes import Process, metric, promote, wait_until
from tests.support.models import register_broken_model, register_sklearn_model, sample_rows
from tests.support.stack import PluginStack, ReceiverSpec, served_version

SECRET = "rollout-secret"
STAGED, ROLLOUT, TAGGED = "staged-model", "rollout-model", "tagged-model"
PUSH_DEADLINE = 15.0  # far below the 600 s poll
BODY = sample_rows(2)


def ready(receiver: Process) -> bool:
    return requests.get(receiver.url + "/health/ready", timeout=2).ok


@dataclass
class Stack:
    server: Process
    staged: Process
    rollout: Process
    tagged: Process

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.server.url)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    staged = ReceiverSpec(STAGED, {"MODEL_PREWARM": "Staging"}, log_name="staged.log")
    rollout = ReceiverSpec(ROLLOUT, {"MODEL_CANARY": "@challenger:20",
                                     "MODEL_SHADOW": "@challenger"}, log_name="rollout.log")
    tagged = ReceiverSpec(TAGGED, {"MODEL_CANARY": "@challenger"}, log_name="tagged.log")
    with PluginStack(tmp_path_factory.mktemp("rollout"), secret=SECRET) as plugin:
        server = plugin.start_server([staged.webhook, rollout.webhook, tagged.webhook])
        for name in (STAGED, ROLLOUT, TAGGED):
            plugin.register(name, versions=1)
        client = MlflowClient(server.url)
        challenger = register_sklearn_model(server.url, ROLLOUT, seed=1, inverted=True)
        client.set_registered_model_alias(ROLLOUT, "challenger", challenger)
        challenger = register_sklearn_model(server.url, TAGGED, seed=1, inverted=True)
        client.set_registered_model_alias(TAGGED, "challenger", challenger)
        receivers = plugin.start_receivers([staged, rollout, tagged])
        for receiver in receivers:
            wait_until(partial(ready, receiver), timeout=60, message="receiver ready")
        yield Stack(server, *receivers)


def current(receiver: Process) -> dict[str, Any]:
    answer = requests.get(receiver.url + "/models/current", timeout=5)
    answer.raise_for_status()
    return dict(answer.json())


def predict(session: requests.Session, receiver: Process, key: str | None = None,
            path: str = "/invocations") -> requests.Response:
    headers = {"X-Hotswap-Key": key} if key is not None else {}
    return session.post(receiver.url + path, json=BODY, headers=headers, timeout=10)


def test_a_staging_version_is_loaded_before_its_promotion_which_downloads_nothing(
        stack: Stack) -> None:
    url = stack.server.url
    version = register_sklearn_model(url, STAGED, seed=1)
    promote(STAGED, version, "Staging", tracking_uri=url, archive_existing=False)
    wait_until(lambda: current(stack.staged)["prewarmed"][0]["version"] == version,
               timeout=PUSH_DEADLINE, message=f"version {version} pre-warmed")
    with requests.Session() as session:
        answers = [predict(session, stack.staged) for _ in range(20)]
    # Loaded, yet never served at the default endpoint.
    assert {(a.status_code, a.headers["X-Model-Version"]) for a in answers} == {(200, "1")}
    misses = metric(stack.staged.url, "hotswap_model_cache_misses_total")
    hits = metric(stack.staged.url, "hotswap_model_cache_hits_total")

    promote(STAGED, version, "Production", tracking_uri=url, archive_existing=True)
    wait_until(lambda: served_version(stack.staged) == version, timeout=PUSH_DEADLINE,
               message=f"version {version} served")

    assert metric(stack.staged.url, "hotswap_model_cache_misses_total") == misses
    assert metric(stack.staged.url, "hotswap_model_cache_hits_total") == hits + 1
    # The same refresh then finds Staging empty (the version moved on).
    wait_until(lambda: current(stack.staged)["prewarmed"] == [
        {"reference": "Staging", "version": None, "loaded_at": None}],
        timeout=PUSH_DEADLINE, message="Staging empty")
    described = current(stack.staged)
    assert described["canary"] is None and described["shadow"] is None


def test_a_20_percent_canary_answers_a_fifth_and_a_key_is_sticky(stack: Stack) -> None:
    described = current(stack.rollout)
    assert described["canary"]["version"] == described["shadow"]["version"] == "2"
    assert described["canary"]["active"] and described["canary"]["percent"] == 20
    with requests.Session() as session:
        answers = [predict(session, stack.rollout) for _ in range(500)]
        keyed = {f"user-{i}": {(r.headers["X-Model-Version"], r.headers["X-Model-Role"])
                               for r in (predict(session, stack.rollout, f"user-{i}")
                                         for _ in range(4))}
                 for i in range(30)}
    assert all(a.status_code == 200 for a in answers)
    sides = Counter((a.headers["X-Model-Version"], a.headers["X-Model-Role"]) for a in answers)
    assert set(sides) == {("1", "primary"), ("2", "canary")}
    assert 50 <= sides[("2", "canary")] <= 150, sides  # 10-30 %
    assert all(len(seen) == 1 for seen in keyed.values()), keyed
    assert {side for seen in keyed.values() for side in seen} == {("1", "primary"),
                                                                  ("2", "canary")}
    assert metric(stack.rollout.url, "hotswap_predictions_total",
                  {"model": ROLLOUT, "version": "2", "role": "canary"}) >= sides[("2", "canary")]


def shadow_accounted(receiver: Process, version: str, answered: int) -> bool:
    """Every primary answer since the shadow's arrival was compared with it or shed."""
    labels = {"model": ROLLOUT, "version": version}
    done = (metric(receiver.url, "hotswap_shadow_comparisons_total", labels)
            + metric(receiver.url, "hotswap_shadow_shed_total", labels))
    return done == answered


def test_a_shadow_never_changes_an_answer_and_its_comparisons_are_counted(
        stack: Stack) -> None:
    with requests.Session() as session:
        pinned = predict(session, stack.rollout, path=f"/models/{ROLLOUT}/versions/1/invocations")
        primary = metric(stack.rollout.url, "hotswap_predictions_total",
                         {"model": ROLLOUT, "version": "1", "role": "primary"})
        # Every primary answer so far at the followed endpoints has had its shadow; the one
        # pinned request has not.
        wait_until(lambda: shadow_accounted(stack.rollout, "2", int(primary) - 1), timeout=10,
                   message="earlier shadows accounted for")
        answers = [predict(session, stack.rollout, f"shadowed-{i}") for i in range(100)]
    answers = [a for a in answers if a.headers["X-Model-Role"] == "primary"]
    assert len(answers) > 50
    exclude = {"date"}
    for answer in answers:
        assert answer.status_code == 200
        assert answer.json() == pinned.json()
        assert ({k.lower(): v for k, v in answer.headers.items() if k.lower() not in exclude}
                == {k.lower(): v for k, v in pinned.headers.items() if k.lower() not in exclude})
    wait_until(lambda: shadow_accounted(stack.rollout, "2", int(primary) - 1 + len(answers)),
               timeout=10, message="the new shadows accounted for")
    labels = {"model": ROLLOUT, "version": "2"}
    compared = metric(stack.rollout.url, "hotswap_shadow_comparisons_total", labels)
    assert compared >= 1
    # The challenger was trained on flipped labels: it disagrees on every row.
    assert metric(stack.rollout.url, "hotswap_shadow_disagreements_total", labels) == compared
    assert metric(stack.rollout.url, "hotswap_predictions_total",
                  {**labels, "role": "shadow"}) == compared


def test_moving_the_challenger_alias_moves_canary_and_shadow_at_once(stack: Stack) -> None:
    version = register_sklearn_model(stack.server.url, ROLLOUT, seed=2)
    stack.client.set_registered_model_alias(ROLLOUT, "challenger", version)
    seen: list[tuple[str | None, str | None]] = []

    def moved() -> bool:
        described = current(stack.rollout)
        seen.append((described["canary"]["version"], described["shadow"]["version"]))
        return seen[-1] == (version, version)

    wait_until(moved, timeout=PUSH_DEADLINE, message=f"canary and shadow at version {version}")
    assert all(canary == shadow for canary, shadow in seen), seen
    with requests.Session() as session:
        roles = {predict(session, stack.rollout, f"user-{i}").headers["X-Model-Version"]
                 for i in range(30)}
    assert roles == {"1", version}  # the same keys as before: their canary share moved too
    wait_until(lambda: metric(stack.rollout.url, "hotswap_shadow_comparisons_total",
                              {"model": ROLLOUT, "version": version})
               + metric(stack.rollout.url, "hotswap_shadow_shed_total",
                        {"model": ROLLOUT, "version": version}) >= 1,
               timeout=10, message=f"version {version} shadowing")


def test_a_broken_challenger_never_affects_an_answer(stack: Stack) -> None:
    broken = register_broken_model(stack.server.url, ROLLOUT)
    answers: list[requests.Response] = []
    stop = threading.Event()

    def client() -> None:
        with requests.Session() as session:
            i = 0
            while not stop.is_set():
                answers.append(predict(session, stack.rollout, f"user-{i % 30}"))
                i += 1

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        stack.client.set_registered_model_alias(ROLLOUT, "challenger", broken)
        wait_until(lambda: current(stack.rollout)["canary"]["version"] is None
                   and "broken" in (requests.get(stack.rollout.url + "/health", timeout=5)
                                    .json()["last_update_error"] or ""),
                   timeout=PUSH_DEADLINE, message="the broken challenger refused")
        after = len(answers)
        wait_until(lambda: len(answers) >= after + 100, timeout=30, message="100 more answers")
    finally:
        stop.set()
        thread.join(timeout=15)
    assert all(a.status_code == 200 for a in answers), {a.status_code for a in answers}
    late = answers[after:]
    assert {(a.headers["X-Model-Version"], a.headers["X-Model-Role"]) for a in late} == {
        ("1", "primary")}
    assert served_version(stack.rollout) == "1"
    described = current(stack.rollout)
    assert described["shadow"]["version"] is None and not described["canary"]["active"]


def test_one_registry_call_per_refresh_whatever_the_rollout_references(stack: Stack) -> None:
    # `rollout` follows Production and loads @challenger for its canary and its shadow.
    before = metric(stack.rollout.url, "hotswap_registry_resolves_total")
    for _ in range(3):
        answer = requests.post(stack.rollout.url + "/models/reload", timeout=60)
        assert answer.status_code == 200, answer.text
    assert metric(stack.rollout.url, "hotswap_registry_resolves_total") == before + 3


def test_a_canary_share_set_as_a_registry_tag_takes_that_share(stack: Stack) -> None:
    described = current(stack.tagged)["canary"]
    assert (described["version"], described["percent"], described["source"]) == (
        "2", 0, "registry")  # no tag yet: no canary traffic
    stack.client.set_registered_model_tag(TAGGED, "hotswap.canary_percent", "30")
    wait_until(lambda: current(stack.tagged)["canary"]["percent"] == 30, timeout=PUSH_DEADLINE,
               message="the tag's share applied")
    described = current(stack.tagged)["canary"]
    assert (described["source"], described["active"]) == ("registry", True)
    with requests.Session() as session:
        answers = [predict(session, stack.tagged) for _ in range(400)]
    assert all(a.status_code == 200 for a in answers)
    canary = sum(a.headers["X-Model-Role"] == "canary" for a in answers)
    assert 80 <= canary <= 160, canary  # 30 % of 400, within 10 points

    stack.client.delete_registered_model_tag(TAGGED, "hotswap.canary_percent")
    wait_until(lambda: current(stack.tagged)["canary"]["percent"] == 0, timeout=PUSH_DEADLINE,
               message="the share back to 0 without the tag")
    with requests.Session() as session:
        assert {predict(session, stack.tagged).headers["X-Model-Role"]
                for _ in range(50)} == {"primary"}
