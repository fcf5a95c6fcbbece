"""The Dagster UI of DARTS, used as a person uses it (Playwright + Debian chromium) and through GraphQL.

Both tests share one ``darts ui`` on a small demo instance (``tests/dagster_ui.py``). Screenshots are written to
the browser test's ``tmp_path`` and their paths printed.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterRunStatus
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from darts_assets.definitions import defs
from darts_assets.sensors import planet_scene_sensor
from tests.dagster_ui import CODE_LOCATION, REPOSITORY, RUN_TIMEOUT_S, DartsUi, LaunchedRun

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking"]
REQUIRE_BROWSER_ENV = "DARTS_REQUIRE_BROWSER"  # set by .ci/run: a missing chromium fails instead of skipping
ACTION_TIMEOUT_MS = 60_000
SCENE_ASSET = "planet_scene_item"
LINEAGE_ASSET = "validation_metrics"
RUN_STATUS = re.compile(r"^(Success|Failure|Canceled)$")
SENSOR_TICK_TIMEOUT_S = 240
ZOOM_OUT_CLICKS = 12


def chromium_path() -> str:
    """Debian's chromium; skipped when absent, except in CI (``CI`` or ``DARTS_REQUIRE_BROWSER`` set)."""
    path = shutil.which("chromium")
    if path:
        return path
    reason = "Debian chromium is not installed (apt-get install -y chromium)"
    if os.environ.get("CI") or os.environ.get(REQUIRE_BROWSER_ENV):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    """A chromium page (1920x1200); its last state is saved as ``last_page.png`` whatever the outcome."""
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1920, "height": 1200})
            context.set_default_timeout(ACTION_TIMEOUT_MS)
            browser_page = context.new_page()
            yield browser_page
            save_screenshot(browser_page, tmp_path / "last_page.png")
        finally:
            browser.close()


def save_screenshot(page: Page, path: Path) -> Path:
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def skip_community_popup(page: Page) -> None:
    """Dismiss the community pop-up the UI shows on a first visit (when the instance does not disable it)."""
    skip = page.get_by_role("button", name="Skip", exact=True)
    try:
        skip.wait_for(state="visible", timeout=3000)
    except PlaywrightTimeoutError:
        return
    skip.click()


def choose_partition_in_dialog(page: Page, partition_key: str) -> None:
    """Open the Materialize dialog of the asset page and select one partition."""
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Select a partition or create one").click()
    item = page.get_by_role("menuitem", name=partition_key)  # the item repeats its key (label, title)
    item.click()
    page.keyboard.press("Escape")  # close the partition list, keep the dialog
    item.wait_for(state="hidden")
    dialog.get_by_text("1 partition", exact=True).wait_for()


def wait_for_run_status(page: Page) -> str:
    """The run page's terminal status (Success, Failure or Canceled) once it shows one."""
    status = page.get_by_text(RUN_STATUS).first
    status.wait_for(timeout=RUN_TIMEOUT_S * 1000)
    return status.inner_text()


def node_labels(page: Page) -> list[str]:
    """The asset names drawn in the lineage graph (long names are shortened with an ellipsis in the middle)."""
    labels = page.locator("[class*=assetName]")
    labels.first.wait_for()
    return labels.all_inner_texts()


def zoom_out_until_drawn(page: Page, names: set[str], max_clicks: int = ZOOM_OUT_CLICKS) -> list[str]:
    """Click the graph's zoom-out button until every asset of ``names`` is drawn (only visible nodes are drawn)."""
    zoom_out = page.get_by_role("button").filter(has=page.get_by_role("img", name="zoom_out"))
    for _ in range(max_clicks):
        page.wait_for_timeout(500)  # let the graph redraw
        labels = node_labels(page)
        if all(shows(labels, name) for name in names):
            zoom_out.click()  # one step more: nodes at the edges fully in view for the screenshot
            return labels
        zoom_out.click()
    return node_labels(page)


def shows(labels: list[str], name: str) -> bool:
    for label in labels:
        head, ellipsis, tail = label.partition("…")
        if label == name or (ellipsis and name.startswith(head) and name.endswith(tail)):
            return True
    return False


def ancestor_names(asset: str) -> set[str]:
    graph = defs.resolve_asset_graph()
    return {key.to_user_string() for key in graph.get_ancestor_asset_keys(AssetKey(asset))}


def test_materialise_a_scene_in_the_browser_and_open_the_validation_lineage(
    darts_ui: DartsUi, page: Page, tmp_path: Path
) -> None:
    partition_key = darts_ui.scene_ids[0]
    started = time.monotonic()
    page.goto(f"{darts_ui.url}/assets/{SCENE_ASSET}")
    skip_community_popup(page)
    page.get_by_role("button", name="Materialize…").wait_for()
    save_screenshot(page, tmp_path / "1_scene_asset.png")

    choose_partition_in_dialog(page, partition_key)
    save_screenshot(page, tmp_path / "2_materialize_dialog.png")
    page.get_by_role("dialog").get_by_role("button", name="Launch 1 run").click()
    page.get_by_text(re.compile(r"^Launched run ")).wait_for()
    page.get_by_role("link", name="View", exact=True).click()  # in the toast
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    run_id = page.url.rsplit("/", 1)[-1].split("?")[0]
    status = wait_for_run_status(page)
    save_screenshot(page, tmp_path / "3_run.png")
    print(f"run {run_id} of {partition_key}: {status} after {time.monotonic() - started:.0f} s")
    assert status == "Success"
    with darts_ui.instance() as instance:
        assert partition_key in instance.get_materialized_partitions(AssetKey(SCENE_ASSET))
        assert instance.get_run_by_id(run_id).tags["dagster/partition"] == partition_key

    page.goto(f"{darts_ui.url}/assets/{LINEAGE_ASSET}")
    page.get_by_role("tab", name="Lineage").click()
    neighbours = node_labels(page)
    parents = {key.to_user_string() for key in defs.resolve_asset_graph().get(AssetKey(LINEAGE_ASSET)).parent_keys}
    assert all(shows(neighbours, name) for name in parents | {LINEAGE_ASSET}), (parents, neighbours)
    save_screenshot(page, tmp_path / "4_validation_lineage.png")

    page.get_by_role("button", name="Upstream").click()
    page.get_by_role("button", name="All", exact=True).click()
    ancestors = ancestor_names(LINEAGE_ASSET)
    assert {"model_checkpoint", SCENE_ASSET} <= ancestors
    upstream = zoom_out_until_drawn(page, ancestors)
    assert all(shows(upstream, name) for name in ancestors), (sorted(ancestors), upstream)
    save_screenshot(page, tmp_path / "5_validation_upstream_lineage.png")


SENSOR_STATE = """
query SensorState($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 1) { status error { message } } } }
    ... on PythonError { message }
  }
}"""
START_SENSOR = """
mutation StartSensor($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}"""
RESET_SENSOR = """
mutation ResetSensor($selector: SensorSelector!) {
  resetSensor(sensorSelector: $selector) { __typename ... on Sensor { sensorState { status } } }
}"""


def sensor_selector(name: str) -> dict[str, str]:
    return {"repositoryLocationName": CODE_LOCATION, "repositoryName": REPOSITORY, "sensorName": name}


def wait_for_sensor_tick(darts_ui: DartsUi, selector: dict[str, str]) -> dict:
    """The daemon's first tick of the sensor (fails after ``SENSOR_TICK_TIMEOUT_S``)."""
    deadline = time.monotonic() + SENSOR_TICK_TIMEOUT_S
    while time.monotonic() < deadline:
        state = darts_ui.graphql(SENSOR_STATE, {"selector": selector})["sensorOrError"]["sensorState"]
        ticks = [tick for tick in state["ticks"] if tick["status"] != "STARTED"]
        if ticks:
            return ticks[0]
        time.sleep(3)
    pytest.fail(f"the daemon did not tick {selector['sensorName']} within {SENSOR_TICK_TIMEOUT_S} s")


def test_graphql_runs_a_scene_partition_and_starts_the_scene_sensor(
    darts_ui: DartsUi, graphql_scene_run: LaunchedRun
) -> None:
    print(f"GraphQL run {graphql_scene_run.run_id}: {graphql_scene_run.status} in {graphql_scene_run.seconds:.0f} s")
    assert graphql_scene_run.status == DagsterRunStatus.SUCCESS
    with darts_ui.instance() as instance:
        assert graphql_scene_run.partition_key in instance.get_materialized_partitions(AssetKey(SCENE_ASSET))

    selector = sensor_selector(planet_scene_sensor.name)
    before = darts_ui.graphql(SENSOR_STATE, {"selector": selector})["sensorOrError"]["sensorState"]["status"]
    assert before == "STOPPED"  # stopped by default
    started = darts_ui.graphql(START_SENSOR, {"selector": selector})["startSensor"]
    assert started["__typename"] == "Sensor", started
    assert started["sensorState"]["status"] == "RUNNING"
    try:
        state = darts_ui.graphql(SENSOR_STATE, {"selector": selector})["sensorOrError"]["sensorState"]
        assert state["status"] == "RUNNING"
        tick = wait_for_sensor_tick(darts_ui, selector)  # every catalogued scene is a partition already
        assert tick["status"] == "SKIPPED", tick
    finally:
        darts_ui.graphql(RESET_SENSOR, {"selector": selector})
