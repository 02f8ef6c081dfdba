"""The declarations are the documentation: README's settings tables and `--help` agree with them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlflow_hotswap_plugin import env
from mlflow_hotswap_plugin.settings import Settings as PluginSettings
from receiver.__main__ import main
from receiver.settings import Settings as ReceiverSettings

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(?P<variable>[A-Z_]+)` \| (?P<help>.*) \| (?P<default>[^|]*) \|$")


def readme_table(heading: str) -> dict[str, str]:
    """The variable -> default cells of the first settings table after `heading`."""
    text = README.read_text(encoding="utf-8")
    assert heading in text, f"README has no {heading!r}"
    lines = text.split(heading, 1)[1].splitlines()
    start = lines.index("| variable | meaning | default |")
    table = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        match = ROW.match(line)
        assert match, f"not a settings row: {line}"
        table[match["variable"]] = match["default"]
    return table


@pytest.mark.parametrize(("heading", "settings"), [
    ("### Plugin settings", PluginSettings),
    ("## Run a receiver", ReceiverSettings),
])
def test_readme_tables_list_every_declared_variable_with_its_default(
        heading: str, settings: type[PluginSettings] | type[ReceiverSettings]) -> None:
    declared = {row.variable: row.default for row in env.rows(settings)}
    assert readme_table(heading) == declared


def test_help_lists_every_variable_with_its_default_and_meaning(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for row in env.rows(ReceiverSettings):
        default = row.default.replace("`", "")
        expected = "(required)" if default == "required" else f"(default: {default})"
        assert f"{row.variable} {expected}" in shown
        assert " ".join(row.help.replace("`", "").split()) in shown


def test_max_addresses_is_a_plugin_setting() -> None:
    assert PluginSettings.from_env({}).max_addresses == 10000
    assert PluginSettings.from_env({"HOTSWAP_MAX_ADDRESSES": "3"}).max_addresses == 3
    with pytest.raises(env.SettingError, match="HOTSWAP_MAX_ADDRESSES must be 1 or more"):
        PluginSettings.from_env({"HOTSWAP_MAX_ADDRESSES": "0"})


def test_both_packages_raise_the_one_setting_error() -> None:
    with pytest.raises(env.SettingError, match="HOTSWAP_TIMEOUT"):
        PluginSettings.from_env({"HOTSWAP_TIMEOUT": "soon"})
    with pytest.raises(env.SettingError, match="MODEL_UPDATE_INTERVAL"):
        ReceiverSettings.from_env({"MLFLOW_TRACKING_URI": "x", "MODEL_NAME": "m",
                                   "MODEL_UPDATE_INTERVAL": "soon"})
