from __future__ import annotations

import pytest

from mlflow_hotswap_plugin.settings import ConfigError, Settings, redact


def test_defaults_without_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings(targets=(), secrets=(), timeout=5.0, max_retries=3,
                                max_addresses=10000)
    assert settings.secret is None


def test_reads_every_variable() -> None:
    settings = Settings.from_env({
        "HOTSWAP_TARGETS": " http://a:8000/webhooks/mlflow , https://b/hook ,",
        "HOTSWAP_WEBHOOK_SECRET": "s3cret", "HOTSWAP_TIMEOUT": "2.5", "HOTSWAP_MAX_RETRIES": "0",
        "HOTSWAP_MAX_ADDRESSES": "20000"})
    assert settings.targets == ("http://a:8000/webhooks/mlflow", "https://b/hook")
    assert (settings.secret, settings.timeout, settings.max_retries) == ("s3cret", 2.5, 0)
    assert settings.max_addresses == 20000


def test_several_secrets_sign_with_the_first() -> None:
    settings = Settings.from_env({"HOTSWAP_WEBHOOK_SECRET": " new-secret , old-secret,, "})
    assert settings.secrets == ("new-secret", "old-secret")
    assert settings.secret == "new-secret"
    assert Settings.from_env({"HOTSWAP_WEBHOOK_SECRET": " , "}).secret is None


@pytest.mark.parametrize(("env", "message"), [
    ({"HOTSWAP_TARGETS": "ftp://a/hook"}, "got 'ftp://a/hook': it does not start with http://"),
    ({"HOTSWAP_TARGETS": "http://a/x, receiver:8000"},
     "HOTSWAP_TARGETS must be comma-separated http(s) URLs such as http://receiver:8000/"),
    ({"HOTSWAP_TARGETS": "http://a:port/x"}, "got 'http://a:port/x': Port could not be cast"),
    ({"HOTSWAP_TIMEOUT": "fast"}, "HOTSWAP_TIMEOUT must be a number, got 'fast'"),
    ({"HOTSWAP_MAX_ADDRESSES": "0"}, "HOTSWAP_MAX_ADDRESSES must be 1 or more, got '0'"),
    ({"HOTSWAP_MAX_ADDRESSES": "many"}, "HOTSWAP_MAX_ADDRESSES must be an integer, got 'many'"),
    ({"HOTSWAP_TIMEOUT": "0"}, "HOTSWAP_TIMEOUT must be a positive number"),
    ({"HOTSWAP_TIMEOUT": "-3"}, "HOTSWAP_TIMEOUT must be a positive number"),
    ({"HOTSWAP_TIMEOUT": "301"},
     "HOTSWAP_TIMEOUT must be a positive number of seconds, at most 300"),
    ({"HOTSWAP_TIMEOUT": "nan"}, "HOTSWAP_TIMEOUT must be a number, got 'nan'"),
    ({"HOTSWAP_TIMEOUT": "inf"}, "HOTSWAP_TIMEOUT must be a number, got 'inf'"),
    ({"HOTSWAP_TIMEOUT": "1_0"}, "HOTSWAP_TIMEOUT must be a number"),
    ({"HOTSWAP_TIMEOUT": "\u0665"}, "HOTSWAP_TIMEOUT must be a number"),  # Arabic-Indic five
    ({"HOTSWAP_MAX_RETRIES": "2.5"}, "HOTSWAP_MAX_RETRIES must be an integer, got '2.5'"),
    ({"HOTSWAP_MAX_RETRIES": "-1"}, "HOTSWAP_MAX_RETRIES must be 0 or more"),
    ({"HOTSWAP_MAX_RETRIES": "21"}, "HOTSWAP_MAX_RETRIES must be 0 or more, at most 20"),
    ({"HOTSWAP_MAX_RETRIES": "\u0663"}, "HOTSWAP_MAX_RETRIES must be an integer"),
    ({"HOTSWAP_MAX_RETRIES": "9" * 5000}, "HOTSWAP_MAX_RETRIES must be an integer"),
])
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert message in str(info.value)
    assert str(info.value).startswith(next(iter(env)))
    assert len(str(info.value)) < 200


def test_secrets_stay_out_of_repr_and_messages() -> None:
    settings = Settings(targets=("http://user:pw@a/hook?token=t",), secrets=("s3cret", "0ld"))
    for text in (repr(settings), str(settings)):
        assert "s3cret" not in text and "0ld" not in text
        assert "pw" not in text and "token" not in text
    assert "secrets=<2 set>" in repr(settings)
    with pytest.raises(ConfigError) as info:
        Settings(targets=("ftp://user:pw@a/hook",))
    assert "pw" not in str(info.value)
    assert redact("https://u:p@[::1]:8443/h?q=1") == "https://[::1]:8443/h"
    assert redact("u:p@host") == "<URL with credentials>"


def test_a_single_string_is_not_taken_as_secrets() -> None:
    with pytest.raises(TypeError):
        Settings(secrets="s3cret")  # type: ignore[arg-type]
