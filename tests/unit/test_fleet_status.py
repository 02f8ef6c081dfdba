"""`mlflow-hotswap status`'s rows and its idea of a converged fleet; the command line's usage
errors (exit 2)."""

from __future__ import annotations

import pytest

from mlflow_hotswap_plugin.commands import main
from mlflow_hotswap_plugin.fleet.replicas import Page, expand
from mlflow_hotswap_plugin.fleet.status import converged, row, table
from tests.support.fleet import FakeReplica


def pages(*percents: float) -> list[Page]:
    replicas = []
    for i, percent in enumerate(percents):
        replica = FakeReplica(f"10.0.0.{i}:8080")
        replica.serve("2", "3", percent)
        replica.answer("primary", "2", 5, 0.001)
        replicas.append(replica)
    return [replica.page() for replica in replicas]


def test_rows_show_each_replica_and_a_down_one_as_down() -> None:
    fleet = pages(25, 25)
    down = FakeReplica("10.0.0.9:8080")
    down.reachable = False
    text = table([*fleet, down.page()])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["ADDRESS", "READY", "VERSION"]
    assert lines[1].split()[:5] == ["10.0.0.0:8080", "yes", "2", "v3", "25"]
    assert "primary=5" in lines[1]
    assert lines[3].split()[:2] == ["10.0.0.9:8080", "down"]
    assert row(fleet[0])["predictions"] == {"primary": 5}


def test_converged_means_every_replica_ready_with_the_same_versions_and_shares() -> None:
    assert converged(pages(25, 25, 25))
    assert not converged(pages(25, 25, 5))
    down = FakeReplica("10.0.0.9:8080")
    down.reachable = False
    assert not converged([*pages(25, 25), down.page()])
    assert not converged([])


def test_a_url_is_one_replica_per_address() -> None:
    replicas = expand(["http://127.0.0.1:8080/", "http://127.0.0.1:8080", "http://127.0.0.2"])
    assert [(r.url, r.host) for r in replicas] == [
        ("http://127.0.0.1:8080", "127.0.0.1:8080"), ("http://127.0.0.2:80", "127.0.0.2")]


@pytest.mark.parametrize("argv", [
    ["rollout", "m", "--canary", "@c", "--receivers", "http://x:1"],
    ["rollout", "m", "--canary", "@c", "--promote-alias", "champion"],
    ["rollout", "m", "--canary", "@c", "--promote-alias", "a", "--promote-stage", "Production",
     "--receivers", "http://x:1"],
    ["rollout", "m", "--canary", "@c", "--promote-alias", "a", "--receivers", "http://x:1",
     "--steps", "50,25"],
    ["rollout", "m", "--canary", "@c", "--promote-alias", "a", "--receivers", "http://x:1",
     "--max-error-rate", "2"],
    ["status"],
    ["status", "--receivers", "x:1"],
    ["nothing"],
])
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err
