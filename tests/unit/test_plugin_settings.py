from __future__ import annotations

import pytest

from mlflow_hotswap_plugin.settings import ConfigError, Settings, redact


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings(targets=(), secret=None, timeout=5.0, max_retries=3)


def test_reads_every_variable() -> None:
    settings = Settings.from_env({
        "HOTSWAP_TARGETS": " http://a:8000/webhooks/mlflow , https://b/hook ,",
        "HOTSWAP_WEBHOOK_SECRET": "s3cret", "HOTSWAP_TIMEOUT": "2.5", "HOTSWAP_MAX_RETRIES": "0"})
    assert settings.targets == ("http://a:8000/webhooks/mlflow", "https://b/hook")
    assert (settings.secret, settings.timeout, settings.max_retries) == ("s3cret", 2.5, 0)


@pytest.mark.parametrize(("env", "message"), [
    ({"HOTSWAP_TARGETS": "ftp://a/hook"}, "HOTSWAP_TARGETS: 'ftp://a/hook' is not an http(s) URL"),
    ({"HOTSWAP_TARGETS": "receiver:8000"},
     "HOTSWAP_TARGETS: 'receiver:8000' is not an http(s) URL"),
    ({"HOTSWAP_TARGETS": "http://a:port/x"}, "HOTSWAP_TARGETS"),
    ({"HOTSWAP_TIMEOUT": "fast"}, "HOTSWAP_TIMEOUT must be a number, got 'fast'"),
    ({"HOTSWAP_TIMEOUT": "0"}, "HOTSWAP_TIMEOUT must be a positive number"),
    ({"HOTSWAP_TIMEOUT": "nan"}, "HOTSWAP_TIMEOUT must be a positive number"),
    ({"HOTSWAP_MAX_RETRIES": "2.5"}, "HOTSWAP_MAX_RETRIES must be an integer, got '2.5'"),
    ({"HOTSWAP_MAX_RETRIES": "-1"}, "HOTSWAP_MAX_RETRIES must be 0 or more"),
])
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert message in str(info.value)


def test_secrets_stay_out_of_repr_and_messages() -> None:
    settings = Settings(targets=("http://user:pw@a/hook?token=t",), secret="s3cret")
    assert "s3cret" not in repr(settings)
    assert "pw" not in repr(settings) and "token" not in repr(settings)
    with pytest.raises(ConfigError) as info:
        Settings(targets=("ftp://user:pw@a/hook",))
    assert "pw" not in str(info.value)
    assert redact("https://u:p@[::1]:8443/h?q=1") == "https://[::1]:8443/h"
