from __future__ import annotations

import logging

import pytest

from mlflow_hotswap_plugin.delivery import Outcome
from mlflow_hotswap_plugin.targets import Target, addresses, resolve


def test_default_resolver() -> None:
    assert resolve("127.0.0.5", 80) == ["127.0.0.5"]
    assert resolve("::1", 80) == ["::1"]
    assert resolve("localhost", 80) == ["127.0.0.1"]


def test_target_parsing_keeps_what_the_request_needs() -> None:
    target = Target.parse("https://u:p%40ss@receivers.ns.svc:8443/webhooks/mlflow?x=1")
    assert (target.scheme, target.host, target.port) == ("https", "receivers.ns.svc", 8443)
    assert target.host_header == "receivers.ns.svc:8443"
    assert target.path == "/webhooks/mlflow?x=1"
    assert target.auth_header is not None and target.auth_header.startswith("Basic ")
    assert Target.parse("http://r/").host_header == "r"
    assert Target.parse("http://r").path == "/"
    assert Target.parse("http://[::1]:8000/h").host_header == "[::1]:8000"
    assert target.safe_url == "https://receivers.ns.svc:8443/webhooks/mlflow"


def test_reprs_show_no_credentials() -> None:
    target = Target.parse("https://user:hunter2@r.example/hook?token=abc")
    outcome = Outcome(target, "10.0.0.1", None, "ConnectTimeoutError", 4)
    for text in (repr(target), repr(outcome)):
        assert "hunter2" not in text and "abc" not in text and "Basic" not in text


def test_addresses_are_every_one_the_name_resolves_to() -> None:
    many = [f"10.0.{i // 256}.{i % 256}" for i in range(5000)]
    asked: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return many

    target = Target.parse("http://receivers.ns.svc:8000/webhooks/mlflow")
    assert addresses(target, resolver, limit=10000) == many
    assert asked == [("receivers.ns.svc", 8000)]


def test_addresses_past_the_limit_are_cut_with_a_warning_naming_the_count(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlflow_hotswap_plugin")
    target = Target.parse("http://receivers/webhooks/mlflow")
    found = addresses(target, lambda host, port: ["10.0.0.1", "10.0.0.2", "10.0.0.3"], limit=2)
    assert found == ["10.0.0.1", "10.0.0.2"]
    assert ("receivers resolves to 3 addresses, more than HOTSWAP_MAX_ADDRESSES=2: 1 replica(s) "
            "are NOT notified") in caplog.text


def test_a_name_with_no_address_is_an_error() -> None:
    with pytest.raises(OSError, match="resolves to no address"):
        addresses(Target.parse("http://empty/hook"), lambda host, port: [], limit=10)
