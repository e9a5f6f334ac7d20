"""The schedules emit the right runs for given ticks; the file sensor fires once per new or changed file."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
import yaml

from recopipeline.defs.resources import SourceResource
from recopipeline.defs.stage import AS_OF_TAG

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def tick(definitions: dg.Definitions, name: str, moment: datetime) -> list[dg.RunRequest]:
    schedule = definitions.resolve_schedule_def(name)
    repository = definitions.get_repository_def()
    with dg.build_schedule_context(scheduled_execution_time=moment, repository_def=repository) as context:
        return list(schedule.evaluate_tick(context).run_requests or [])


@pytest.mark.parametrize(
    ("moment", "partition"),
    [
        (datetime(2026, 9, 30, 13, 5, tzinfo=timezone.utc), "2026-09-30-12:00"),
        (datetime(2026, 10, 1, 0, 5, tzinfo=timezone.utc), "2026-09-30-23:00"),  # across midnight
        (datetime(2026, 9, 30, 15, 5, tzinfo=timezone(-timedelta(hours=4))),
         "2026-09-30-18:00"),  # a tick given in another zone is the same UTC hour
    ],
)
def test_hourly_schedule_refreshes_the_hour_that_just_ended(definitions, moment, partition):
    schedule = definitions.resolve_schedule_def("hourly_refresh_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone, schedule.job_name) == (
        "5 * * * *", "UTC", "hourly_refresh"
    )
    (request,) = tick(definitions, "hourly_refresh_schedule", moment)
    assert request.partition_key == partition
    assert request.run_key == partition  # a tick evaluated twice does not start a second run


def test_nightly_schedule_reingests_yesterday_and_rebuilds_as_of_midnight(definitions):
    schedule = definitions.resolve_schedule_def("nightly_rebuild_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone, schedule.job_name) == (
        "30 0 * * *", "UTC", "full_rebuild"
    )
    (request,) = tick(definitions, "nightly_rebuild_schedule", datetime(2026, 10, 1, 0, 30, tzinfo=timezone.utc))
    assert request.tags[RANGE_START] == "2026-09-30-00:00"
    assert request.tags[RANGE_END] == "2026-09-30-23:00"
    assert request.tags[AS_OF_TAG] == "2026-10-01T00:00:00"
    assert request.run_key == "nightly-2026-09-30"


def test_refresh_jobs_share_the_serialising_lane_and_ingest_does_not(definitions):
    lanes = {name: definitions.resolve_job_def(name).tags.get("recopipeline/lane")
             for name in ("full_rebuild", "hourly_refresh", "ingest_sources")}
    assert lanes == {"full_rebuild": "refresh", "hourly_refresh": "refresh", "ingest_sources": None}
    config = Path(__file__).parents[1] / "dagster.yaml"
    instance_config = yaml.safe_load(config.read_text())
    assert {"key": "recopipeline/lane", "value": "refresh", "limit": 1} in (
        instance_config["concurrency"]["runs"]["tag_concurrency_limits"]
    )
    assert instance_config["concurrency"]["pools"]["default_limit"] == 1


# ---- the file sensor ------------------------------------------------------------------------------------------

CUSTOMERS = "customer_id,email,signup_date,country\nC1,,2026-01-01 00:00:00,GB\n"
PRODUCTS = (
    "product_id,product_name,category,brand,price,stock_quantity,is_active,created_at\n"
    "P1,Mug,kitchen,,5.0,3,true,2026-01-01 00:00:00\n"
)


def interactions(*timestamps: str) -> str:
    lines = ["event_id,customer_id,product_id,interaction_type,interaction_timestamp,session_id"]
    lines += [f"E{i}-{t[:13]},C1,P1,view,{t}," for i, t in enumerate(timestamps)]
    return "\n".join(lines) + "\n"


def evaluate(definitions, location: Path, cursor: str | None):
    sensor = definitions.resolve_sensor_def("source_files_sensor")
    resources = {"source": SourceResource(source=str(location), cache_dir=str(location.parent / "cache"))}
    with dg.build_sensor_context(cursor=cursor, resources=resources, definitions=definitions) as context:
        result = sensor.evaluate_tick(context)
    return list(result.run_requests or []), result.cursor, result.skip_message


@pytest.fixture
def inbox(tmp_path) -> Path:
    location = tmp_path / "inbox"
    (location / "customer_interactions").mkdir(parents=True)
    (location / "customers.csv").write_text(CUSTOMERS)
    (location / "products.csv").write_text(PRODUCTS)
    (location / "customer_interactions" / "a.csv").write_text(
        interactions("2026-09-30 10:15:00", "2026-09-30 12:59:59")
    )
    return location


def test_sensor_fires_once_per_new_file(definitions, inbox):
    requests, cursor, _ = evaluate(definitions, inbox, None)
    by_file = {r.tags["recopipeline/file"]: r for r in requests}
    assert sorted(Path(p).name for p in by_file) == ["a.csv", "customers.csv", "products.csv"]
    events = by_file[str(inbox / "customer_interactions" / "a.csv")]
    assert events.asset_selection == [dg.AssetKey("customer_interactions")]
    assert (events.tags[RANGE_START], events.tags[RANGE_END]) == ("2026-09-30-10:00", "2026-09-30-12:00")
    assert by_file[str(inbox / "customers.csv")].asset_selection == [dg.AssetKey("customers")]

    requests, cursor, skip = evaluate(definitions, inbox, cursor)
    assert requests == [] and "no new" in skip  # nothing new: no run

    (inbox / "customer_interactions" / "b.csv").write_text(interactions("2026-09-30 14:00:00"))
    requests, cursor, _ = evaluate(definitions, inbox, cursor)
    assert [(Path(r.tags["recopipeline/file"]).name, r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests] == [
        ("b.csv", "2026-09-30-14:00", "2026-09-30-14:00")
    ]
    assert evaluate(definitions, inbox, cursor)[0] == []


def test_sensor_fires_again_for_a_changed_file_with_a_new_run_key(definitions, inbox):
    requests, cursor, _ = evaluate(definitions, inbox, None)
    first_key = next(r.run_key for r in requests if r.tags["recopipeline/file"].endswith("customers.csv"))
    path = inbox / "customers.csv"
    path.write_text(CUSTOMERS + "C2,,2026-02-01 00:00:00,FR\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    requests, _, _ = evaluate(definitions, inbox, cursor)
    assert [Path(r.tags["recopipeline/file"]).name for r in requests] == ["customers.csv"]
    assert requests[0].run_key != first_key


def test_sensor_ingests_the_hour_in_progress_and_leaves_future_hours(definitions, inbox):
    _, cursor, _ = evaluate(definitions, inbox, None)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    (inbox / "customer_interactions" / "now.csv").write_text(interactions(now.strftime("%Y-%m-%d %H:%M:%S")))
    (inbox / "customer_interactions" / "later.csv").write_text(
        interactions((now + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S"))
    )
    requests, cursor, _ = evaluate(definitions, inbox, cursor)
    hour = now.strftime("%Y-%m-%d-%H:00")
    assert [(Path(r.tags["recopipeline/file"]).name, r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests] == [
        ("now.csv", hour, hour)  # the hour so far; later.csv's hour has not started: no run for it yet
    ]
    assert "later.csv" in cursor


def test_sensor_skips_when_the_source_is_not_a_directory(definitions, tmp_path):
    sensor = definitions.resolve_sensor_def("source_files_sensor")
    resources = {"source": SourceResource(source="synthetic:xs", cache_dir=str(tmp_path))}
    with dg.build_sensor_context(resources=resources, definitions=definitions) as context:
        result = sensor.evaluate_tick(context)
    assert not result.run_requests and "file mode" in result.skip_message


def test_the_jobs_select_what_docs_refresh_md_says(definitions):
    def selected(job: str) -> set[str]:
        return {key.to_user_string() for key in definitions.resolve_job_def(job).asset_layer.selected_asset_keys}

    sources = {"customers", "products", "merchandising_rules", "customer_interactions", "cart_activity", "orders"}
    incremental = {"hourly_customer_refresh", "hourly_customer_publish"}
    assert selected("hourly_refresh") == sources | incremental | {"product_trending"}
    assert selected("ingest_sources") == sources
    nightly = selected("full_rebuild")
    assert sources | {"customer_top_recommendations", "published_recommendations"} <= nightly
    assert not nightly & incremental
    for job in ("full_rebuild", "hourly_refresh", "ingest_sources"):
        assert definitions.resolve_job_def(job).partitions_def.timezone == "UTC"


# ---- the run config of scheduled and sensed runs (RECOPIPELINE_RUN_CONFIG) -------------------------------------

REORDER = Path(__file__).parents[1] / "recopipeline" / "deploy" / "reorder.yaml"


def test_scheduled_and_sensed_runs_take_the_run_config_file_read_at_each_tick(definitions, monkeypatch, inbox):
    from recopipeline.lib.run_config import load_run_config

    moment = datetime(2026, 10, 1, 0, 30, tzinfo=timezone.utc)
    monkeypatch.delenv("RECOPIPELINE_RUN_CONFIG", raising=False)
    assert [r.run_config for r in tick(definitions, "nightly_rebuild_schedule", moment)] == [{}]
    monkeypatch.setenv("RECOPIPELINE_RUN_CONFIG", str(REORDER))  # after the definitions were loaded
    expected = load_run_config(REORDER)
    assert expected["resources"]["tuning"]["config"]["weight_repurchase"] == 1.0
    for name in ("nightly_rebuild_schedule", "hourly_refresh_schedule"):
        (request,) = tick(definitions, name, moment)
        assert request.run_config == expected
        job = definitions.resolve_job_def(definitions.resolve_schedule_def(name).job_name)
        dg.validate_run_config(job, request.run_config)
    requests, _, _ = evaluate(definitions, inbox, None)
    assert requests and all(r.run_config == expected for r in requests)


def test_a_broken_run_config_file_fails_the_tick_with_its_cause(definitions, monkeypatch, tmp_path):
    broken = tmp_path / "tuning.yaml"
    broken.write_text("resources:\n  tuning:\n    config:\n      weight_eaze: 1.0\n")
    monkeypatch.setenv("RECOPIPELINE_RUN_CONFIG", str(broken))
    with pytest.raises(dg.DagsterError, match="evaluation of schedule nightly_rebuild_schedule") as failed:
        tick(definitions, "nightly_rebuild_schedule", datetime(2026, 10, 1, 0, 30, tzinfo=timezone.utc))
    cause = str(failed.value.__cause__)
    assert cause == f"run config {broken}: unknown tuning value weight_eaze (see docs/configuration.md)"
