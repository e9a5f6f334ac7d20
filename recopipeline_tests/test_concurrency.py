"""Overlapping runs on a real Dagster instance (`dagster dev`: run queue, daemon, multiprocess executor).

Over a warehouse after a nightly rebuild, part of a second rebuild, two backfills of the same hours and an
hourly refresh are launched at once through the run queue. All must succeed, steps that write the same asset must never overlap (while other steps do), the
hourly refresh must wait for the rebuild, and every table must equal the one a sequential run produces.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster_graphql import DagsterGraphQLClient
from sqlalchemy import select

from recopipeline.defs.partitions import range_tags
from recopipeline.lib.contract import EVENT_SOURCES
from recopipeline.defs.stage import AS_OF_TAG
from recopipeline.lib.hourly import HOUR, hour_key
from recopipeline.lib.warehouse import Warehouse
from recopipeline.runner import release_abandoned_runs
from recopipeline.serving.database import ServingDatabase
from recopipeline.serving.schema import customer_recommendations
from recopipeline_tests.dagster_dev import REPOSITORY, dagster_dev
from recopipeline_tests.nightly_base import SOURCE, NightlyBase

pytestmark = pytest.mark.slow  # `dagster dev` and command-line runs with the multiprocess executor

RUN_DEADLINE_SECONDS = 240
# run-specific columns: who ingested and when
VOLATILE = {"quarantine": ["run_id", "ingested_at"]}
# assets that read the wall clock or the serving database's own history
NOT_COMPARED = {"recommendation_feedback_metrics", "feedback_clicks", "published_recommendations"}
NIGHTLY_PART = ["customer_segments", "customer_behavior_comprehensive", "customer_product_affinity"]
HOURLY_PART = ["customer_interactions", "orders", "hourly_customer_refresh", "hourly_customer_publish"]


def launches(base: NightlyBase) -> dict[str, dict]:
    """The runs: part of a nightly rebuild, two backfills of the same hours, an hourly refresh."""
    backfill = {"job": "ingest_sources", "asset_selection": list(EVENT_SOURCES),
                "tags": range_tags(base.last - 2 * HOUR, base.last)}
    return {
        "nightly": {"job": "full_rebuild", "asset_selection": NIGHTLY_PART,
                    "tags": {**range_tags(base.first, base.last), AS_OF_TAG: base.hour.isoformat()}},
        "backfill_1": backfill,
        "backfill_2": backfill,
        "hourly": {"job": "hourly_refresh", "asset_selection": HOURLY_PART,
                   "tags": {"dagster/partition": hour_key(base.hour)}},
    }


def sequential(definitions: dg.Definitions, base: NightlyBase, target: Path) -> Warehouse:
    """The same runs, one after the other, in process."""
    store = base.copy_to(target)
    for launch in launches(base).values():
        result = dg.materialize(
            list(definitions.assets), selection=launch["asset_selection"], resources=base.resources(store),
            tags=launch["tags"],
        )
        assert result.success
    return store


def wait_for(instance: dg.DagsterInstance, run_ids: list[str], deadline: float) -> list[dg.DagsterRun]:
    while time.monotonic() < deadline:
        runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
        if all(run.is_finished for run in runs):
            return runs
        time.sleep(1)
    raise AssertionError(f"runs not finished in time: {[(r.run_id, r.status) for r in runs]}")


def step_intervals(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    starts, ends = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            ends[event.step_key] = record.timestamp
    return {step: (starts[step], ends[step]) for step in starts if step in ends}


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def tables(store: Warehouse) -> dict[str, pd.DataFrame]:
    found = {}
    for asset in store.assets():
        if asset in NOT_COMPARED:
            continue
        frame = store.read(f"SELECT * FROM {asset}", inputs=[asset]).drop(columns=VOLATILE.get(asset, []))
        found[asset] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return found


def served(url: str) -> pd.DataFrame:
    database = ServingDatabase(url)
    try:
        with database.engine.connect() as conn:
            rows = conn.execute(
                select(customer_recommendations.c.version, customer_recommendations.c.customer_id,
                       customer_recommendations.c.rank, customer_recommendations.c.product_id,
                       customer_recommendations.c.score)
                .order_by(customer_recommendations.c.version, customer_recommendations.c.customer_id,
                          customer_recommendations.c.rank)
            ).all()
    finally:
        database.dispose()
    return pd.DataFrame(rows, columns=["version", "customer_id", "rank", "product_id", "score"])


def test_overlapping_runs_succeed_serialise_writers_and_equal_a_sequential_run(
    definitions, tmp_path_factory, nightly: NightlyBase
):
    base = nightly
    root = tmp_path_factory.mktemp("concurrency")
    store = base.copy_to(root / "concurrent")
    env = {
        "RECOPIPELINE_HOME": str(root / "home"),
        "RECOPIPELINE_WAREHOUSE": store.root,
        "RECOPIPELINE_SOURCE": SOURCE,
        "RECOPIPELINE_SERVING_URL": f"sqlite:///{root / 'concurrent' / 'warehouse-serving.db'}",
        "RECOPIPELINE_DUCKDB_THREADS": "1",
        "RECOPIPELINE_DUCKDB_MEMORY": "1GB",
    }
    (root / "home").mkdir()
    (root / "home" / "input").symlink_to(base.input_cache)  # the generated input, not generated again
    started = time.monotonic()
    with dagster_dev(root / "dev", env=env) as server:
        client = DagsterGraphQLClient("127.0.0.1", port_number=int(server.url.rsplit(":", 1)[1]))
        launched = {
            name: client.submit_job_execution(launch["job"], tags=launch["tags"],
                                              asset_selection=launch["asset_selection"])
            for name, launch in launches(base).items()
        }
        with dg.DagsterInstance.from_config(str(server.home)) as instance:
            runs = wait_for(instance, list(launched.values()), started + RUN_DEADLINE_SECONDS)
            failed = [(r.job_name, r.status) for r in runs if r.status != dg.DagsterRunStatus.SUCCESS]
            assert not failed, f"{failed}\n{server.log_tail()}"
            steps = {name: step_intervals(instance, run_id) for name, run_id in launched.items()}
    spans = {name: (min(s for s, _ in steps[name].values()), max(e for _, e in steps[name].values()))
             for name in steps}

    # the runs did overlap ...
    assert overlaps(spans["backfill_1"], spans["backfill_2"])
    # ... steps writing the same asset never did, across any two runs ...
    names = list(steps)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for step in steps[a].keys() & steps[b].keys():
                assert not overlaps(steps[a][step], steps[b][step]), f"{step} of {a} and {b} ran at the same time"
    # ... while steps of different assets did (the pools serialise writers, not the pipeline)
    assert any(
        overlaps(steps[a][x], steps[b][y])
        for a in names for b in names if a != b
        for x in steps[a] for y in steps[b] if x != y
    )
    # the hourly refresh waited for the rebuild (one run of the refresh lane at a time)
    assert spans["hourly"][0] >= spans["nightly"][1]

    expected_store = sequential(definitions, base, root / "sequential")
    concurrent, expected = tables(store), tables(expected_store)
    assert concurrent.keys() == expected.keys()
    for asset, frame in expected.items():
        pd.testing.assert_frame_equal(concurrent[asset], frame, obj=asset)
    assert len(concurrent["hourly_customer_refresh"]) > 0
    pd.testing.assert_frame_equal(
        served(f"sqlite:///{root / 'concurrent' / 'warehouse-serving.db'}"),
        served(f"sqlite:///{root / 'sequential' / 'warehouse-serving.db'}"),
    )


def test_a_killed_command_line_run_gives_back_its_pool_slots(tmp_path_factory, nightly: NightlyBase):
    """`recopipeline materialize` executes its run itself; killed, it would hold its steps' slots for ever."""
    base = nightly
    root = tmp_path_factory.mktemp("killed")
    home, dagster_home = root / "home", root / "dagster_home"
    home.mkdir()
    (home / "input").symlink_to(base.input_cache)
    dagster_home.mkdir()
    shutil.copyfile(REPOSITORY / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {**os.environ, "RECOPIPELINE_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
           "RECOPIPELINE_SOURCE": SOURCE}
    command = [str(Path(sys.executable).parent / "recopipeline"), "materialize"]
    process = subprocess.Popen(command, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        try:
            deadline = time.monotonic() + 120
            while not instance.event_log_storage.get_concurrency_run_ids():  # a step holds a pool slot
                assert process.poll() is None and time.monotonic() < deadline, "no step started"
                time.sleep(0.2)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.STARTED  # nobody is left to say otherwise
        assert instance.event_log_storage.get_concurrency_run_ids() == {run.run_id}

        assert release_abandoned_runs(instance) == [run.run_id]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert not instance.event_log_storage.get_concurrency_run_ids()
        assert release_abandoned_runs(instance) == []  # a live or finished run is left alone
