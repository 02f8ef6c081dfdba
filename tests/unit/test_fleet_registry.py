"""Where the rollout's registry client points and how it authenticates: MLflow's variables."""

from __future__ import annotations

import io
from contextlib import redirect_stderr

import pytest

from mlflow_hotswap_plugin import commands
from mlflow_hotswap_plugin.fleet.registry import session_for, tracking_uri


def test_the_registry_uri_wins_over_the_tracking_uri_and_a_trailing_slash_goes() -> None:
    assert tracking_uri({"MLFLOW_TRACKING_URI": "http://a:5000/"}) == "http://a:5000"
    assert tracking_uri({"MLFLOW_TRACKING_URI": "http://a:5000",
                         "MLFLOW_REGISTRY_URI": "https://b"}) == "https://b"


@pytest.mark.parametrize("uri", ["", "sqlite:///mlflow.db", "databricks", "file:///tmp/mlruns"])
def test_anything_but_an_http_server_is_refused_with_what_to_set(uri: str) -> None:
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI"):
        tracking_uri({"MLFLOW_TRACKING_URI": uri})


def test_a_password_in_the_uri_is_not_repeated_in_the_refusal() -> None:
    with pytest.raises(ValueError) as refused:
        tracking_uri({"MLFLOW_TRACKING_URI": "ftp://user:secret@host"})
    assert "secret" not in str(refused.value)


def test_credentials_and_tls_come_from_mlflows_variables() -> None:
    assert session_for({"MLFLOW_TRACKING_TOKEN": "t0k"}).headers["Authorization"] == "Bearer t0k"
    basic = session_for({"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"})
    assert basic.auth == ("u", "p")
    assert session_for({"MLFLOW_TRACKING_INSECURE_TLS": "true"}).verify is False
    pinned = session_for({"MLFLOW_TRACKING_SERVER_CERT_PATH": "/ca.pem",
                          "MLFLOW_TRACKING_CLIENT_CERT_PATH": "/me.pem"})
    assert (pinned.verify, pinned.cert) == ("/ca.pem", "/me.pem")
    plain = session_for({})
    assert "Authorization" not in plain.headers and plain.auth is None and plain.verify is True


def test_the_rollout_command_without_a_server_is_a_usage_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    said = io.StringIO()
    with redirect_stderr(said):
        code = commands.main(["rollout", "m", "--canary", "@challenger", "--promote-alias",
                              "champion", "--receivers", "http://127.0.0.1:1"])
    assert code == 2
    assert "refused: set MLFLOW_TRACKING_URI" in said.getvalue()
