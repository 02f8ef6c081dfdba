from __future__ import annotations

import json

import pytest

from examples.processes import free_port
from mlflow_hotswap_plugin import events, signing
from mlflow_hotswap_plugin.delivery import Attempt, Backoff, Sender, deliver
from mlflow_hotswap_plugin.targets import Target
from tests.support.capture import capture_server
from tests.support.hung import hung_server

SECRET = "delivery-secret"
EVENT = events.alias_created("iris", "champion", "2")


def test_one_attempt_is_signed_and_keeps_the_urls_host_header() -> None:
    with capture_server(secret=SECRET) as capture:
        target = Target.parse(capture.url.replace("127.0.0.1", "receiver.example"))
        result = Sender(SECRET, timeout=5).attempt(target, "127.0.0.1", EVENT.to_json(), "id-7")
        [delivery] = capture.deliveries
    assert result == Attempt(202, None, None) and not result.retryable
    assert delivery.signature_ok is True
    assert delivery.headers[signing.DELIVERY_ID_HEADER] == "id-7"
    assert delivery.headers["Host"] == f"receiver.example:{capture.port}"
    assert json.loads(delivery.body)["data"] == {"name": "iris", "alias": "champion",
                                                 "version": "2"}


def test_an_attempt_at_nothing_or_a_hung_receiver_is_an_error_not_an_exception() -> None:
    down = Target.parse(f"http://127.0.0.1:{free_port()}/hook")
    refused = Sender(None, timeout=5).attempt(down, "127.0.0.1", b"{}", "id")
    assert refused.status is None and refused.retryable and refused.error
    with hung_server() as hung:
        timed_out = Sender(None, timeout=0.2).attempt(Target.parse(hung), "127.0.0.1", b"{}",
                                                      "id")
    assert timed_out.status is None and "Timeout" in str(timed_out.error)


@pytest.mark.parametrize(("status", "retryable"), [
    (202, False), (401, False), (404, False), (429, True), (500, True), (503, True)])
def test_which_answers_are_worth_a_retry(status: int, retryable: bool) -> None:
    assert Attempt(status).retryable is retryable


def test_deliver_retries_then_reports_the_outcome() -> None:
    with capture_server(secret=SECRET) as capture:
        capture.scripted = [503, 502]
        target = Target.parse(capture.url)
        outcome = deliver(Sender(SECRET, 5), EVENT, target, "127.0.0.1", retries=3,
                          backoff=Backoff(0.01, 0.02))
        ids = {d.headers[signing.DELIVERY_ID_HEADER] for d in capture.deliveries}
    assert (outcome.status, outcome.attempts, outcome.accepted) == (202, 3, True)
    assert len(ids) == 1
    with capture_server() as capture:
        capture.scripted = [503] * 5
        outcome = deliver(Sender(None, 5), EVENT, Target.parse(capture.url), "127.0.0.1",
                          retries=0)
    assert (outcome.status, outcome.attempts, outcome.accepted) == (503, 1, False)


def test_backoff_doubles_with_jitter_up_to_its_maximum_and_heeds_retry_after() -> None:
    backoff = Backoff(base=1.0, maximum=8.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)]:
        delays = [backoff.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert backoff.delay(1, "5") == 5.0
    assert backoff.delay(1, "600") == 8.0  # never past the maximum
    assert backoff.delay(1, "Wed, 21 Oct 2015 07:28:00 GMT") <= 1.0  # a date: ignored
    assert backoff.delay(1, "٣") <= 1.0  # a non-ASCII digit: ignored
