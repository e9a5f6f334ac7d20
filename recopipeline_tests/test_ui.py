"""The Dagster UI as a data engineer uses it, driven in Debian's headless Chromium against `dagster dev`.

Every action (materialize all, a backfill) is clicked in the UI; its outcome is read back through the
webserver's GraphQL endpoint, which is steadier to poll than the page. Screenshots go to test-artifacts/ui/;
with RECOPIPELINE_UPDATE_DOC_IMAGES=1 the ones docs/ui.md shows are also copied to docs/images/.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from recopipeline.definitions import defs as load_defs
from recopipeline.defs.partitions import first_hour
from recopipeline.lib.hourly import hour_key
from recopipeline_tests.conftest import CHROMIUM
from recopipeline_tests.dagster_dev import REPOSITORY, DagsterDev, dagster_dev

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = REPOSITORY / "test-artifacts" / "ui"
DOC_IMAGES = REPOSITORY / "docs" / "images"
TOP_N = "customer_top_recommendations"
RUN_TIMEOUT = 300  # seconds for a run or a backfill of the xs data set: a guard against hangs, not a target
# The synthetic data set ends at 2026-10-01 00:00 UTC; the first partition also holds all earlier events.
DATA_HOURS = (hour_key(first_hour()), hour_key(datetime(2026, 9, 30, 23)))
BACKFILL_HOURS = (hour_key(datetime(2026, 9, 30, 22)), hour_key(datetime(2026, 9, 30, 23)))
BACKFILL_BUSY = {"REQUESTED", "CANCELING", "FAILING"}

# Slow (a `dagster dev` server, a rebuild and a backfill clicked in the browser); without Chromium these tests
# skip with the reason, and fail in CI (conftest.py).
pytestmark = [pytest.mark.ui, pytest.mark.slow]


# --- the server, the browser and the pictures -------------------------------------------------------------

@pytest.fixture(scope="module")
def code() -> dg.Definitions:
    """The definitions as the server is about to load them."""
    return load_defs()


@pytest.fixture(scope="module")
def server(code: dg.Definitions, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    workdir = tmp_path_factory.mktemp("ui")
    env = {
        "RECOPIPELINE_HOME": str(workdir / "home"),
        "RECOPIPELINE_SOURCE": "synthetic:xs",
        "GX_ANALYTICS_ENABLED": "false",
    }
    with dagster_dev(workdir, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser: Browser, server: DagsterDev) -> Iterator[Page]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1600, "height": 1000})
    # the "join the Dagster community" dialog would cover the first page
    context.add_init_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
    context.set_default_timeout(30_000)
    tab = context.new_page()
    yield tab
    context.close()


def picture(page: Page, name: str, *, for_docs: bool = False, full_page: bool = False) -> Path:
    """Save a screenshot as a test artifact (and, on request, as the docs' picture of the same name)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    if for_docs and os.environ.get("RECOPIPELINE_UPDATE_DOC_IMAGES") == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_IMAGES / f"{name}.png")
    return path


@contextmanager
def picture_on_failure(page: Page, name: str) -> Iterator[None]:
    """A screenshot of the page as it was when the steps inside failed."""
    try:
        yield
    except (Exception, pytest.fail.Exception):
        picture(page, f"failed-{name}", full_page=True)
        raise


# --- reading outcomes back through GraphQL ------------------------------------------------------------------

RUN_ASSETS = """
query ($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run {
    assetMaterializations { assetKey { path } } } } }
"""
BACKFILLS = """
query { partitionBackfillsOrError(limit: 20) { __typename ... on PartitionBackfills { results {
    id status numPartitions partitionNames } } } }
"""
BACKFILL_RUNS = """
query ($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill {
    runs { runId status jobName } } } }
"""
ROW_COUNT = """
query ($key: AssetKeyInput!) { assetOrError(assetKey: $key) { __typename ... on Asset {
    assetMaterializations(limit: 1) { metadataEntries { label ... on IntMetadataEntry { intValue } } } } } }
"""


def backfills(server: DagsterDev) -> list[dict]:
    return server.graphql(BACKFILLS)["partitionBackfillsOrError"]["results"]


def backfill_runs(server: DagsterDev, backfill_id: str) -> list[dict]:
    return server.graphql(BACKFILL_RUNS, {"id": backfill_id})["partitionBackfillOrError"]["runs"]


def materialized_by(server: DagsterDev, run_ids: list[str]) -> set[str]:
    return {
        "/".join(event["assetKey"]["path"])
        for run_id in run_ids
        for event in server.graphql(RUN_ASSETS, {"runId": run_id})["runOrError"]["assetMaterializations"]
    }


def row_count(server: DagsterDev, asset: str) -> int:
    """The row count recorded by the asset's latest materialization."""
    latest = server.graphql(ROW_COUNT, {"key": {"path": [asset]}})["assetOrError"]["assetMaterializations"][0]
    return next(entry["intValue"] for entry in latest["metadataEntries"] if entry["label"] == "dagster/row_count")


def wait_for(what: str, probe: Callable[[], object], timeout: float, server: DagsterDev) -> object:
    """Poll `probe` until it returns something truthy; fail with the server's last log lines after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(1)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s; dagster dev log:\n{server.log_tail()}")


def launched_backfill(server: DagsterDev, known: set[str]) -> dict:
    """The first backfill launched after `known` was taken."""
    fresh = wait_for("a backfill launch", lambda: [b for b in backfills(server) if b["id"] not in known], 90, server)
    return fresh[-1]


def finished_backfill(server: DagsterDev, backfill_id: str) -> dict:
    def finished():
        found = [backfill for backfill in backfills(server) if backfill["id"] == backfill_id]
        return found[0] if found and found[0]["status"] not in BACKFILL_BUSY else None

    return wait_for(f"backfill {backfill_id} finishing", finished, RUN_TIMEOUT, server)


# --- the definitions the pages should show ------------------------------------------------------------------

def asset_groups(code: dg.Definitions) -> dict[str, list[str]]:
    graph = code.resolve_asset_graph()
    groups: dict[str, list[str]] = {}
    for key in sorted(graph.get_all_asset_keys()):
        groups.setdefault(graph.get(key).group_name, []).append(key.to_user_string())
    return groups


def scheduled_job(code: dg.Definitions, word: str) -> str:
    """The job of the schedule whose name contains `word` ("nightly", "hourly")."""
    jobs = [schedule.job_name for schedule in code.schedules or [] if word in schedule.name]
    assert jobs, f"no {word} schedule"
    return jobs[0]


def job_assets(code: dg.Definitions, job: str) -> set[str]:
    return {key.to_user_string() for key in code.resolve_job_def(job).asset_layer.selected_asset_keys}


def launch_backfill(page: Page, first: str, last: str, count: int | None = None) -> None:
    """In the open launch dialog: choose the partitions first..last and launch the backfill."""
    partitions = page.get_by_placeholder("No matching partitions")
    partitions.fill(f"[{first}...{last}]")
    partitions.press("Enter")
    if count is not None:
        expect(page.get_by_text(f"{count} partitions", exact=True)).to_be_visible()
    page.get_by_role("button", name="Launch backfill").click()


# --- the pages ------------------------------------------------------------------------------------------------

def test_the_catalog_and_the_lineage_graph_show_every_asset(page: Page, code: dg.Definitions):
    groups = asset_groups(code)
    page.set_viewport_size({"width": 1600, "height": 2600})  # the catalog renders only the rows on screen
    page.goto("/assets")
    for name in (name for names in groups.values() for name in names):
        expect(page.locator(f'a[href="/assets/{name}"]').first).to_be_visible()
    picture(page, "ui-catalog")
    page.set_viewport_size({"width": 1600, "height": 1000})

    page.goto("/asset-groups")
    for group in groups:
        expect(page.get_by_title(group, exact=True).first).to_be_visible()
    picture(page, "ui-asset-graph", for_docs=True)
    for group, names in groups.items():  # one group's graph shows its assets as nodes
        page.goto(f'/asset-groups~group:"{group}"')
        for name in names:  # a long name is shown cut in the middle; the node holds its whole text, measured
            node = page.get_by_text(name, exact=True).first
            expect(node).to_be_attached()
            if len(name) <= 30:
                expect(node).to_be_visible()


def test_the_automation_page_lists_the_nightly_and_hourly_schedules(
    page: Page, server: DagsterDev, code: dg.Definitions
):
    schedules = sorted(schedule.name for schedule in code.schedules or [])
    assert any("nightly" in name for name in schedules) and any("hourly" in name for name in schedules)
    page.goto("/automation")
    for name in schedules:
        expect(page.locator(f'a[href="/locations/{server.location}/schedules/{name}"]')).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Scheduled "))).to_have_count(len(schedules))
    automations = len(schedules) + len(code.sensors or [])
    # loaded: "select all", then a selection box and an on/off switch per schedule or sensor
    expect(page.get_by_role("checkbox")).to_have_count(1 + 2 * automations)
    picture(page, "ui-schedules", for_docs=True)


@pytest.fixture(scope="module")
def rebuild(page: Page, server: DagsterDev, code: dg.Definitions) -> dict:
    """The nightly job's assets, materialized by clicking "Materialize all" on the job's graph.

    The job is partitioned by hour, so the launch dialog asks for the hours: those of the synthetic data (the
    first partition also holds every earlier event) become one backfill.
    """
    job = scheduled_job(code, "nightly")
    known = {backfill["id"] for backfill in backfills(server)}
    with picture_on_failure(page, "materialize-all"):
        page.goto(f"/locations/{server.location}/jobs/{job}")
        page.get_by_role("button", name="Materialize all").click()
        page.get_by_text("Partition selection").wait_for()
        launch_backfill(page, *DATA_HOURS)
        backfill = finished_backfill(server, launched_backfill(server, known)["id"])
        finished = backfill_runs(server, backfill["id"])
        page.goto(f"/runs/b/{backfill['id']}")
        expect(page.get_by_text("In progress", exact=True)).to_have_count(1)  # the column header, not the status
        picture(page, "ui-rebuild-backfill")
        # the picture of a run: the one that built the recommendations (or the last one)
        shown = next((run for run in finished if TOP_N in materialized_by(server, [run["runId"]])), finished[-1])
        page.set_viewport_size({"width": 1600, "height": 1300})
        page.goto(f"/runs/{shown['runId']}")
        # loaded: the log, scrolled to its end, shows how the run ended
        expect(page.get_by_text(re.compile(r"^RUN_(SUCCESS|FAILURE|CANCELED)$")).first).to_be_visible()
        picture(page, "ui-run", for_docs=True)
        page.set_viewport_size({"width": 1600, "height": 1000})
    return {"job": job, "backfill": backfill, "runs": finished}


def test_materialize_all_from_the_ui_succeeds(page: Page, server: DagsterDev, code: dg.Definitions, rebuild: dict):
    assert rebuild["backfill"]["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), rebuild["backfill"]
    failed = [run["runId"] for run in rebuild["runs"] if run["status"] != "SUCCESS"]
    assert rebuild["runs"] and not failed, f"runs {failed} did not succeed; see test-artifacts/ui/ui-run.png"
    materialized = materialized_by(server, [run["runId"] for run in rebuild["runs"]])
    assert sorted(job_assets(code, rebuild["job"]) - materialized) == []

    group = "behavior"  # its graph after the rebuild: every asset materialized, its checks passed
    page.goto(f'/asset-groups~group:"{group}"')
    nodes = len(asset_groups(code)[group])
    expect(page.get_by_text("Asset checks", exact=True)).to_have_count(nodes)  # a row of every node
    expect(page.get_by_text(re.compile(r"^Loading"))).to_have_count(0, timeout=30_000)
    expect(page.get_by_text("Never materialized")).to_have_count(0)
    picture(page, "ui-asset-group", for_docs=True)


def test_the_top_recommendations_page_shows_checks_and_row_count(
    page: Page, server: DagsterDev, code: dg.Definitions, rebuild: dict
):
    graph = code.resolve_asset_graph()
    checks = sorted(key.name for key in graph.asset_check_keys if key.asset_key == dg.AssetKey(TOP_N))
    assert checks
    page.goto(f"/assets/{TOP_N}")
    expect(page.get_by_text("Row count", exact=True)).to_be_visible()
    expect(page.get_by_text(f"{row_count(server, TOP_N):,}", exact=True).first).to_be_visible()
    picture(page, "ui-top-recommendations", for_docs=True)

    page.goto(f"/assets/{TOP_N}?view=checks")
    for name in checks:
        expect(page.get_by_text(name, exact=True).first).to_be_visible()
    expect(page.get_by_text("Succeeded", exact=True)).to_have_count(len(checks))
    picture(page, "ui-checks", for_docs=True)


def test_a_backfill_of_two_partitions_launched_from_the_ui_completes(
    page: Page, server: DagsterDev, code: dg.Definitions, rebuild: dict
):
    job = scheduled_job(code, "hourly")
    assert code.resolve_job_def(job).partitions_def is not None
    known = {backfill["id"] for backfill in backfills(server)}
    with picture_on_failure(page, "backfill"):
        page.goto(f"/locations/{server.location}/jobs/{job}")
        page.get_by_role("button", name="Materialize all").click()
        page.get_by_text("Partition selection").wait_for()
        launch_backfill(page, *BACKFILL_HOURS, count=2)
        backfill = finished_backfill(server, launched_backfill(server, known)["id"])
    assert backfill["partitionNames"] == list(BACKFILL_HOURS)
    assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
    backfill_run_statuses = [run["status"] for run in backfill_runs(server, backfill["id"])]
    assert backfill_run_statuses and set(backfill_run_statuses) == {"SUCCESS"}

    page.goto(f"/runs/b/{backfill['id']}")
    expect(page.get_by_text("2 partitions", exact=True)).to_be_visible()
    # loaded and done: "In progress" is left only as a column header, no longer as the status
    expect(page.get_by_text("In progress", exact=True)).to_have_count(1)
    picture(page, "ui-backfill", for_docs=True)
