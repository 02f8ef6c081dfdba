"""A person in the MLflow UI, in a real browser, reaches the receiver by push alone.

Headless Chromium (Debian's, at CHROMIUM_PATH) driven by Playwright clicks through the UI of a
real `mlflow server` with the plugin. Both receivers poll every 600 s, so a swap within the test
can only come from the plugin's notification. Every step is screenshotted into
tests-artifacts/ui/<test>/, which a failed run keeps.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from playwright.sync_api import Browser, Page, sync_playwright

from examples.processes import Process, wait_until
from tests.support.stack import PluginStack, ReceiverSpec, served_version

pytestmark = pytest.mark.compat

MODEL = "ui-model"
ALIAS = "champion"
SWAP_DEADLINE = 30.0  # seconds: a pushed reload of a small model, on a busy 2-core machine
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "tests-artifacts" / "ui"


@dataclass
class Stack:
    server: Process
    by_stage: Process  # follows Production
    by_alias: Process  # follows @champion


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    by_stage = ReceiverSpec(MODEL, {"MODEL_STAGE": "Production"}, log_name="receiver-stage.log")
    by_alias = ReceiverSpec(MODEL, {"MODEL_ALIAS": ALIAS}, log_name="receiver-alias.log")
    with PluginStack(tmp_path_factory.mktemp("ui")) as plugin:
        server = plugin.start_server([by_stage.webhook, by_alias.webhook])
        plugin.register(MODEL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MlflowClient(server.url).set_registered_model_alias(MODEL, ALIAS, "1")
        receivers = plugin.start_receivers([by_stage, by_alias])
        plugin.wait_serving("1", receivers)
        yield Stack(server, *receivers)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"Chromium is needed at {CHROMIUM} (apt-get install chromium, "
                           "or set CHROMIUM_PATH); .ci/run installs it.")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Shots:
    """Numbered screenshots of one test's steps, in a folder that outlives the run."""

    def __init__(self, page: Page, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.count = 0

    def __call__(self, step: str) -> None:
        self.count += 1
        self.page.screenshot(path=str(self.folder / f"{self.count:02d}-{step}.png"))


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[tuple[Page, Shots]]:
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    # MLflow 2.x greets a version page with a pop-up about the new registry UI; close it.
    page.add_locator_handler(
        page.get_by_role("dialog", name=re.compile("governed deployments with the new Model")),
        lambda dialog: dialog.get_by_role("button", name="Close").click())
    shots = Shots(page, folder)
    try:
        yield page, shots
    finally:
        shots("end")  # where a failed step left the page
        context.close()


def set_new_registry_ui(page: Page, on: bool) -> None:
    """The version page's "New model registry UI" toggle: off shows the stage dropdown."""
    switch = page.get_by_role("switch", name="New model registry UI")
    if (switch.get_attribute("aria-checked") == "true") != on:
        switch.click()
        if not on:  # MLflow asks for confirmation when the new UI is turned off
            page.get_by_role("dialog").get_by_role("button", name="Disable").click()


def test_stage_dropdown_with_archiving_swaps_the_receiver(
        stack: Stack, page: tuple[Page, Shots]) -> None:
    tab, shot = page
    tab.goto(f"{stack.server.url}/#/models/{MODEL}/versions/2")
    tab.get_by_role("heading", name="Version 2").wait_for()
    shot("version-2")
    set_new_registry_ui(tab, on=False)
    stage = tab.get_by_role("status").filter(has_text="None")
    stage.wait_for()
    shot("legacy-stage-dropdown")

    stage.click()
    tab.get_by_role("menuitem").filter(has_text="Production").click()
    dialog = tab.get_by_role("dialog").filter(has_text="Stage transition")
    archive = dialog.get_by_role("checkbox")
    archive.check()
    assert archive.is_checked()
    shot("transition-dialog-archive-ticked")
    dialog.get_by_role("button", name="OK").click()
    # Until the dialog and the stage menu close, they show a "Production" tag of their own.
    dialog.wait_for(state="hidden")
    tab.get_by_role("status").filter(has_text="Production").filter(visible=True).wait_for()
    shot("version-2-in-production")

    wait_until(lambda: served_version(stack.by_stage) == "2", timeout=SWAP_DEADLINE, interval=0.1,
               message="the stage-following receiver serving version 2")
    client = MlflowClient(stack.server.url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert client.get_model_version(MODEL, "1").current_stage == "Archived"
    tab.goto(f"{stack.server.url}/#/models/{MODEL}/versions/1")
    tab.get_by_role("status").filter(has_text="Archived").wait_for()
    shot("version-1-archived")


def test_alias_editor_moves_the_alias_and_swaps_the_receiver(
        stack: Stack, page: tuple[Page, Shots]) -> None:
    tab, shot = page
    tab.goto(f"{stack.server.url}/#/models/{MODEL}/versions/2")
    tab.get_by_role("heading", name="Version 2").wait_for()
    set_new_registry_ui(tab, on=True)
    shot("version-2-new-registry-ui")

    tab.get_by_role("button", name="Add", exact=True).click()
    dialog = tab.get_by_role("dialog", name="Add/Edit alias for model version 2")
    editor = dialog.get_by_role("combobox")
    editor.click()
    editor.press_sequentially(ALIAS)
    editor.press("Enter")
    dialog.get_by_role("status", name=ALIAS).wait_for()
    dialog.get_by_text(re.compile(f'"{ALIAS}" alias is also being used on version 1')).wait_for()
    shot("alias-editor-champion-entered")
    dialog.get_by_role("button", name="Save aliases").click()
    tab.get_by_role("status", name=ALIAS).wait_for()
    shot("version-2-is-champion")

    wait_until(lambda: served_version(stack.by_alias) == "2", timeout=SWAP_DEADLINE, interval=0.1,
               message=f"the @{ALIAS} receiver serving version 2")
    assert MlflowClient(stack.server.url).get_model_version_by_alias(MODEL, ALIAS).version == "2"
