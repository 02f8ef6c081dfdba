"""The scoring lane against a real receiver: batching never changes an answer, a bad request
fails alone, a full lane says 503, a swap keeps each answer with the version that scored it, and
very wide bodies are refused without holding up anyone else.

Tests that need requests queued behind a running predict use a custom pyfunc that holds each
predict while a gate file exists (tests/support/gated_model.py), and read the lane's queue from
/metrics: no timing decides anything.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from examples.processes import Process, metric, promote, start_receiver, wait_until
from tests.support.models import FEATURES, register_gated_model, register_tree_regressor
from tests.support.stack import ReceiverFactory, served_version

JSON = "application/json"


def post(receiver: Process, body: bytes, content_type: str = JSON,
         timeout: float = 60) -> requests.Response:
    return requests.post(receiver.url + "/invocations", data=body, timeout=timeout,
                         headers={"Content-Type": content_type})


def split_body(rows: list[list[float]]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": FEATURES, "data": rows}}).encode()


def random_rows(seed: int, count: int) -> list[list[float]]:
    return np.random.default_rng(seed).normal(size=(count, len(FEATURES))).round(6).tolist()


def distinct_bodies(count: int) -> list[tuple[bytes, str]]:
    """Bodies of 1 to 5 rows in three formats; split and records bodies parse to the same
    columns and dtypes, so they may merge with each other."""
    bodies = []
    for i in range(count):
        rows = random_rows(1000 + i, 1 + i % 5)
        if i % 3 == 0:
            bodies.append((split_body(rows), JSON))
        elif i % 3 == 1:
            records = [dict(zip(FEATURES, row, strict=True)) for row in rows]
            bodies.append((json.dumps({"dataframe_records": records}).encode(), JSON))
        else:
            csv = ",".join(FEATURES) + "\n" + "\n".join(",".join(map(str, r)) for r in rows)
            bodies.append((csv.encode(), "text/csv"))
    return bodies


def merged_calls(receiver: Process) -> tuple[float, float]:
    """(predict calls, requests they scored) so far."""
    return (metric(receiver.url, "hotswap_predict_batch_requests_count"),
            metric(receiver.url, "hotswap_predict_batch_requests_sum"))


@pytest.fixture(scope="module")
def tree(plain_mlflow: Process,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, str]]:
    """A receiver serving a scikit-learn tree regressor with the default lane settings."""
    name = "lane-tree"
    version = register_tree_regressor(plain_mlflow.url, name)
    promote(name, version, tracking_uri=plain_mlflow.url, archive_existing=False)
    receiver = start_receiver(tmp_path_factory.mktemp("lane"), plain_mlflow.url, name,
                              env={"MODEL_UPDATE_INTERVAL": "600"})
    wait_until(lambda: requests.get(receiver.url + "/health/ready", timeout=2).ok, timeout=60)
    yield receiver, version
    receiver.stop()


def test_concurrent_clients_each_get_exactly_their_own_predictions(tree) -> None:
    receiver, version = tree
    bodies = distinct_bodies(48)
    # Each body scored alone, one at a time: the answers batching must not change.
    alone = []
    for body, content_type in bodies:
        answer = post(receiver, body, content_type)
        assert answer.status_code == 200, answer.text
        alone.append(answer.json())
    calls_before, requests_before = merged_calls(receiver)

    def client(index: int) -> list[tuple[int, int, Any, str | None]]:
        seen = []
        with requests.Session() as session:
            for round_ in range(6):
                i = (index + 7 * round_) % len(bodies)
                body, content_type = bodies[i]
                answer = session.post(receiver.url + "/invocations", data=body, timeout=60,
                                      headers={"Content-Type": content_type})
                seen.append((i, answer.status_code, answer.json(),
                             answer.headers.get("X-Model-Version")))
        return seen

    with ThreadPoolExecutor(32) as pool:
        outcomes = [o for seen in pool.map(client, range(32)) for o in seen]
    assert len(outcomes) == 32 * 6
    for i, status, answer, served in outcomes:
        assert (status, served) == (200, version), answer
        assert answer == alone[i], f"body {i} got another request's predictions"
    calls, scored = merged_calls(receiver)
    # The lane did merge: fewer predict calls than requests.
    assert scored - requests_before == 32 * 6
    assert calls - calls_before < scored - requests_before


def test_a_bad_request_among_concurrent_good_ones_fails_alone(tree) -> None:
    receiver, _ = tree
    good = [split_body(random_rows(2000 + i, 1 + i % 3)) for i in range(16)]
    expected = [post(receiver, body).json() for body in good]
    bad = [
        # Parses like the good ones and merges with them; the model refuses infinity, so the
        # merged call fails and every request is retried alone.
        b'{"dataframe_split": {"columns": ' + json.dumps(FEATURES).encode()
        + b', "data": [[Infinity, 0.5, 0.5, 0.5]]}}',
        b'{"dataframe_split": {"columns": ["f0", "f1"',  # not JSON
        split_body(random_rows(1, 1)).replace(b'"f3"', b'"nope"'),  # a column the model lacks
    ]
    with ThreadPoolExecutor(24) as pool:
        for _ in range(4):
            good_answers = [pool.submit(post, receiver, body) for body in good]
            bad_answers = [pool.submit(post, receiver, body) for body in bad]
            for answer, want in zip(good_answers, expected, strict=True):
                reply = answer.result()
                assert reply.status_code == 200, reply.text
                assert reply.json() == want
            for answer in bad_answers:
                reply = answer.result()
                assert reply.status_code == 400, reply.text
                assert reply.json()["error_code"] == "BAD_REQUEST"
    assert requests.get(receiver.url + "/health/ready", timeout=5).ok


def test_very_wide_bodies_are_refused_while_a_normal_client_is_served(tree) -> None:
    receiver, _ = tree
    # 250,000 columns (2.4 MB) for a 4-column model.
    header = ",".join(f"c{i}" for i in range(250_000))
    wide = (header + "\n" + ",".join(["1"] * 250_000) + "\n").encode()
    normal = split_body(random_rows(3, 2))
    expected = post(receiver, normal).json()
    refusals: list[requests.Response] = []
    stop = threading.Event()

    def careless_client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                refusals.append(session.post(receiver.url + "/invocations", data=wide,
                                             headers={"Content-Type": "text/csv"}, timeout=60))

    sender = threading.Thread(target=careless_client, daemon=True)
    sender.start()
    try:
        wait_until(lambda: len(refusals) >= 1, timeout=30, message="a wide body answered")
        refused_before = len(refusals)
        with requests.Session() as session:
            for _ in range(40):
                reply = session.post(receiver.url + "/invocations", data=normal, timeout=60,
                                     headers={"Content-Type": JSON})
                assert reply.status_code == 200, reply.text
                assert reply.json() == expected
        refused_during = len(refusals) - refused_before
    finally:
        stop.set()
        sender.join(timeout=60)
    # The wide bodies kept coming, and kept being refused, while the normal client was served.
    assert refused_during >= 1
    for reply in refusals:
        assert reply.status_code == 400
        assert reply.json()["error_code"] == "BAD_REQUEST"
        assert "refused unread" in reply.json()["message"]


# -- requests queued behind a held predict --------------------------------------------------


@pytest.fixture(scope="module")
def gated(plain_mlflow: Process) -> tuple[str, str, str]:
    """`lane-gated`: a custom pyfunc, v1 predicting f0 * 1 and v2 predicting f0 * 2."""
    name = "lane-gated"
    return (name, register_gated_model(plain_mlflow.url, name, factor=1.0),
            register_gated_model(plain_mlflow.url, name, factor=2.0))


class Gate:
    """Holds every predict of a gated receiver while closed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def close(self) -> None:
        self.path.touch()

    def open(self) -> None:
        self.path.unlink(missing_ok=True)


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    gate = Gate(tmp_path / "gate")
    yield gate
    gate.open()


def start_gated(receivers: ReceiverFactory, plain_mlflow: Process, name: str, gate: Gate,
                **env: Any) -> Process:
    return receivers(plain_mlflow.url, name, MODEL_UPDATE_INTERVAL=600,
                     HOTSWAP_TEST_GATE=str(gate.path), **env)


def hold_and_queue(receiver: Process, pool: ThreadPoolExecutor, gate: Gate,
                   bodies: list[bytes]) -> list[Future[requests.Response]]:
    """Close the gate, send the first body and wait until its predict is held, then send the
    others and wait until all are in the lane."""
    gate.close()
    calls = metric(receiver.url, "hotswap_predict_batch_rows_count")
    sent = [pool.submit(post, receiver, bodies[0])]
    wait_until(lambda: metric(receiver.url, "hotswap_predict_batch_rows_count") == calls + 1,
               timeout=30, message="first predict held")
    sent += [pool.submit(post, receiver, body) for body in bodies[1:]]
    wait_until(lambda: metric(receiver.url, "hotswap_lane_queue_depth") == len(bodies),
               timeout=30, message="requests queued")
    return sent


def one_row(value: float) -> bytes:
    return split_body([[value, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize(("mode", "calls"), [("auto", 7), ("on", 2)])
def test_a_custom_pyfunc_is_merged_only_when_batching_is_on(plain_mlflow, receivers, gated, gate,
                                                            mode: str, calls: int) -> None:
    name, v1, _ = gated
    promote(name, v1, tracking_uri=plain_mlflow.url, archive_existing=True)
    receiver = start_gated(receivers, plain_mlflow, name, gate, HOTSWAP_BATCHING=mode)
    with ThreadPoolExecutor(8) as pool:
        sent = hold_and_queue(receiver, pool, gate, [one_row(v) for v in range(7)])
        gate.open()
        answers = [future.result() for future in sent]
    assert [a.json() for a in answers] == [{"predictions": [float(v)]} for v in range(7)]
    # auto: one call per request (a custom pyfunc may look across rows); on: the first call,
    # then one merged call for the six that queued behind it.
    assert merged_calls(receiver) == (calls, 7)


def test_a_full_lane_answers_503_with_retry_after_at_once(plain_mlflow, receivers, gated,
                                                         gate) -> None:
    name, v1, _ = gated
    promote(name, v1, tracking_uri=plain_mlflow.url, archive_existing=True)
    receiver = start_gated(receivers, plain_mlflow, name, gate, HOTSWAP_MAX_QUEUE=3)
    with ThreadPoolExecutor(4) as pool:
        sent = hold_and_queue(receiver, pool, gate, [one_row(v) for v in range(3)])
        refused = post(receiver, one_row(9), timeout=10)  # while the lane is held: at once
        assert refused.status_code == 503
        assert refused.json()["error_code"] == "OVERLOADED"
        assert int(refused.headers["Retry-After"]) >= 1
        assert metric(receiver.url, "hotswap_requests_shed_total", {"reason": "overloaded"}) == 1
        gate.open()
        assert [f.result().status_code for f in sent] == [200, 200, 200]
    assert post(receiver, one_row(9)).json() == {"predictions": [9.0]}


def test_a_swap_while_requests_queue_keeps_each_answer_with_the_version_that_scored_it(
        plain_mlflow, receivers, gated, gate) -> None:
    name, v1, v2 = gated
    promote(name, v1, tracking_uri=plain_mlflow.url, archive_existing=True)
    receiver = start_gated(receivers, plain_mlflow, name, gate, HOTSWAP_BATCHING="on")
    with ThreadPoolExecutor(8) as pool:
        before = hold_and_queue(receiver, pool, gate, [one_row(v) for v in (1, 2, 3, 4)])
        promote(name, v2, tracking_uri=plain_mlflow.url, archive_existing=True)
        reload = requests.post(receiver.url + "/models/reload", timeout=60)
        assert reload.json()["model_version"] == v2, reload.text
        assert served_version(receiver) == v2
        after = [pool.submit(post, receiver, one_row(v)) for v in (5, 6, 7, 8)]
        wait_until(lambda: metric(receiver.url, "hotswap_lane_queue_depth") == 8, timeout=30,
                   message="requests queued for both versions")
        gate.open()
        answers = [(f.result().headers["X-Model-Version"], f.result().json()["predictions"])
                   for f in before + after]
    # Admitted under v1: scored by v1 (f0 * 1), and tagged so; admitted under v2: by v2 (f0 * 2).
    assert answers == [(v1, [1.0]), (v1, [2.0]), (v1, [3.0]), (v1, [4.0]),
                       (v2, [10.0]), (v2, [12.0]), (v2, [14.0]), (v2, [16.0])]
