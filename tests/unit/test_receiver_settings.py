"""Receiver settings: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import os

import pytest

from receiver.settings import Settings, SettingsError, parse_workers

BASE = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "MODEL_NAME": "fraud, churn"}


def test_defaults_are_the_documented_ones() -> None:
    settings = Settings.from_env(BASE)
    assert settings.model_names == ("fraud", "churn")
    assert settings.default_model == "fraud"
    assert (settings.stage, settings.alias, settings.cache_size) == ("Production", None, 5)
    assert settings.update_interval == 60.0
    assert settings.max_body_bytes == 10 * 1024 * 1024
    assert settings.reference == "/Production"


def test_alias_replaces_stage() -> None:
    settings = Settings.from_env({**BASE, "MODEL_ALIAS": "champion"})
    assert settings.reference == "@champion"


@pytest.mark.parametrize("env, variable", [
    ({"MODEL_NAME": "m"}, "MLFLOW_TRACKING_URI"),
    ({"MLFLOW_TRACKING_URI": "x"}, "MODEL_NAME"),
    ({**BASE, "MODEL_NAME": " , "}, "MODEL_NAME"),
    ({**BASE, "MODEL_CACHE_SIZE": "five"}, "MODEL_CACHE_SIZE"),
    ({**BASE, "MODEL_CACHE_SIZE": "0"}, "MODEL_CACHE_SIZE"),
    ({**BASE, "MODEL_UPDATE_INTERVAL": "-1"}, "MODEL_UPDATE_INTERVAL"),
    ({**BASE, "HOTSWAP_MAX_BODY_BYTES": "1MB"}, "HOTSWAP_MAX_BODY_BYTES"),
])
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def test_prediction_threads_default_to_one_and_can_be_raised() -> None:
    assert Settings.from_env(BASE).predict_threads == 1
    assert Settings.from_env({**BASE, "HOTSWAP_PREDICT_THREADS": "4"}).predict_threads == 4
    with pytest.raises(SettingsError, match="HOTSWAP_PREDICT_THREADS"):
        Settings.from_env({**BASE, "HOTSWAP_PREDICT_THREADS": "0"})


def test_workers_default_to_one_and_auto_means_the_usable_cores() -> None:
    assert Settings.from_env(BASE).workers == 1
    assert Settings.from_env({**BASE, "HOTSWAP_WORKERS": "3"}).workers == 3
    usable = len(os.sched_getaffinity(0))
    assert Settings.from_env({**BASE, "HOTSWAP_WORKERS": " Auto "}).workers == usable
    for bad in ("0", "two", "-1"):
        with pytest.raises(SettingsError, match="HOTSWAP_WORKERS"):
            Settings.from_env({**BASE, "HOTSWAP_WORKERS": bad})


def test_the_workers_flag_is_read_as_the_variable_is() -> None:
    assert parse_workers("2") == 2
    assert parse_workers("auto") == len(os.sched_getaffinity(0))
    with pytest.raises(SettingsError, match="HOTSWAP_WORKERS"):
        parse_workers("0")
