"""Hours before the first partition fail in one line before a run starts; schedules never request them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone

import dagster as dg
import pytest

from recopipeline.defs.automation import schedules
from recopipeline.defs.partitions import first_hour, hourly_partitions
from recopipeline.runner import partition_tags

BEFORE = (
    "hour 2018-01-01-03:00 is before the first hourly partition 2026-09-30-00:00; set "
    "RECOPIPELINE_PARTITION_START=2018-01-01 (or earlier) and load the event sources again — docs/refresh.md"
)


@pytest.fixture(autouse=True)
def default_start():
    if first_hour() != datetime(2026, 9, 30):
        pytest.skip("these cases assume the default RECOPIPELINE_PARTITION_START")


@pytest.mark.parametrize("hours", ["2018-01-01-03:00", "2018-01-01-03:00...2026-09-30-05:00"])
def test_an_hour_before_the_first_partition_says_what_to_set(hours):
    with pytest.raises(ValueError) as error:
        partition_tags(hours)
    assert str(error.value) == BEFORE


def test_hours_that_are_not_partitions_are_refused():
    with pytest.raises(ValueError, match=r"^hour 2099-01-01-00:00 has not started yet \(the newest hourly "):
        partition_tags("2026-09-30-00:00...2099-01-01-00:00")
    with pytest.raises(ValueError, match="^hour 2026-09-30-03:30 does not start on a whole hour$"):
        partition_tags("2026-09-30-03:30")
    assert partition_tags("2026-09-30-00:00") == {"dagster/partition": "2026-09-30-00:00"}


def test_the_command_fails_in_one_line_before_a_run_starts(tmp_path):
    env = {**os.environ, "RECOPIPELINE_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    env.pop("RECOPIPELINE_PARTITION_START", None)
    env.pop("RECOPIPELINE_WAREHOUSE", None)
    done = subprocess.run(
        [sys.executable, "-m", "recopipeline.cli", "materialize", "--job", "hourly_refresh", "--hour",
         "2018-01-01-03:00"], capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"recopipeline: error: {BEFORE}"]
    if (tmp_path / "dagster_home").exists():  # no run was started
        with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
            assert not instance.get_runs()


def evaluate(name: str, moment: datetime) -> dg.ScheduleExecutionData:
    with dg.build_schedule_context(scheduled_execution_time=moment) as context:
        return getattr(schedules, name).evaluate_tick(context)


def test_the_schedules_skip_hours_before_the_first_partition():
    hourly = evaluate("hourly_refresh_schedule", datetime(2026, 9, 29, 23, 5, tzinfo=timezone.utc))
    assert not hourly.run_requests and hourly.skip_message.startswith("hour 2026-09-29-22:00 is before the first")
    nightly = evaluate("nightly_rebuild_schedule", datetime(2026, 9, 30, 0, 30, tzinfo=timezone.utc))
    assert not nightly.run_requests
    assert nightly.skip_message == "the day 2026-09-29 ended before the first hourly partition 2026-09-30-00:00"


def test_a_nightly_run_of_the_day_the_partitions_begin_starts_at_the_first_partition(monkeypatch):
    monkeypatch.setattr(schedules, "first_hour", lambda: datetime(2026, 9, 30, 12))
    request = schedules.nightly_run_request(datetime(2026, 10, 1, 0, 30))
    assert request.tags["dagster/asset_partition_range_start"] == "2026-09-30-12:00"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-09-30-23:00"
    assert hourly_partitions.has_partition_key("2026-09-30-12:00")
