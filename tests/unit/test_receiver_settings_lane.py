"""The scoring lane's settings: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import pytest

from receiver.settings import Settings, SettingsError

BASE = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000", "MODEL_NAME": "fraud"}


def test_lane_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.batching == "auto"
    assert (settings.batch_max_rows, settings.max_queue, settings.max_wait) == (1024, 4096, 1.0)
    assert settings.request_timeout == 60.0


def test_lane_values_are_read() -> None:
    settings = Settings.from_env({**BASE, "HOTSWAP_BATCHING": " Off ", "HOTSWAP_BATCH_MAX_ROWS":
                                  "64", "HOTSWAP_MAX_QUEUE": "8", "HOTSWAP_REQUEST_TIMEOUT": "2.5",
                                  "HOTSWAP_MAX_WAIT": "0.25"})
    assert (settings.batching, settings.batch_max_rows, settings.max_queue,
            settings.request_timeout, settings.max_wait) == ("off", 64, 8, 2.5, 0.25)


@pytest.mark.parametrize(("key", "value"), [
    ("HOTSWAP_BATCHING", "sometimes"),
    ("HOTSWAP_BATCH_MAX_ROWS", "0"),
    ("HOTSWAP_BATCH_MAX_ROWS", "many"),
    ("HOTSWAP_MAX_QUEUE", "0"),
    ("HOTSWAP_REQUEST_TIMEOUT", "0"),
    ("HOTSWAP_REQUEST_TIMEOUT", "nan"),
    ("HOTSWAP_REQUEST_TIMEOUT", "soon"),
    ("HOTSWAP_MAX_WAIT", "0"),
    ("HOTSWAP_MAX_WAIT", "-1"),
    ("HOTSWAP_MAX_WAIT", "nan"),
])
def test_bad_lane_values_name_the_variable(key: str, value: str) -> None:
    with pytest.raises(SettingsError, match=key):
        Settings.from_env({**BASE, key: value})
