"""Running the asset graph on a real Dagster instance, outside the UI (CLI, scripts, tests)."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from recopipeline.lib import settings

REPO_INSTANCE_CONFIG = Path(__file__).parents[1] / "dagster.yaml"
LAUNCHED_BY_TAG = "recopipeline/launched_by"  # host:pid of the process that executes a run outside the daemon


def full_rebuild() -> dg.JobDefinition:
    """The full-rebuild job, reconstructable in the executor's subprocesses."""
    from recopipeline.definitions import defs

    return defs().resolve_job_def("full_rebuild")


def hourly_refresh() -> dg.JobDefinition:
    """The hourly-refresh job, reconstructable in the executor's subprocesses."""
    from recopipeline.definitions import defs

    return defs().resolve_job_def("hourly_refresh")


JOBS = {"full_rebuild": full_rebuild, "hourly_refresh": hourly_refresh}


def instance_from_env() -> dg.DagsterInstance:
    """The instance in DAGSTER_HOME; by default a local one that uses the repository's dagster.yaml."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(settings.LOCAL_HOME / "dagster_home")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    config = Path(home) / "dagster.yaml"
    if not config.exists() and REPO_INSTANCE_CONFIG.exists():
        shutil.copyfile(REPO_INSTANCE_CONFIG, config)
    return dg.DagsterInstance.get()


@dataclass
class RunSummary:
    run_id: str
    success: bool
    materialized: dict[str, int | None] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def materialize(
    selection: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
    instance: dg.DagsterInstance | None = None,
    log_level: str = "INFO",
    job: str = "full_rebuild",
    partition: str | None = None,
) -> RunSummary:
    """Materialize the whole graph (or the named assets) with the multiprocess executor.

    The event sources are ingested for every hour that holds source data, in the same run (single-run backfill),
    unless `partition` (an hour or a range of hours, see `partition_tags`) or the tags name the hours.
    """
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; choose one of {', '.join(JOBS)}")
    instance = instance or instance_from_env()
    release_abandoned_runs(instance)
    keys = [dg.AssetKey(name) for name in selection] if selection else None
    tags = dict(tags or {})
    if partition:
        tags |= partition_tags(partition)
    elif not names_partitions(tags):
        tags = {**source_range_tags(), **tags}
    tags[LAUNCHED_BY_TAG] = _this_process()
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    with dg.execute_job(
        dg.reconstructable(JOBS[job]), instance=instance, run_config=run_config, tags=tags,
        asset_selection=keys,
    ) as result:
        summary = RunSummary(run_id=result.run_id, success=result.success)
        for event in result.all_events:
            if event.event_type_value == "ASSET_MATERIALIZATION":
                materialization = event.event_specific_data.materialization
                rows = materialization.metadata.get("dagster/row_count")
                summary.materialized[materialization.asset_key.to_user_string()] = rows.value if rows else None
            elif event.event_type_value == "STEP_SUCCESS":
                summary.seconds[event.step_key] = event.event_specific_data.duration_ms / 1000
            elif event.event_type_value == "STEP_FAILURE":
                error = event.event_specific_data.error
                summary.failures.append(f"{event.step_key}: {error.message.strip() if error else 'failed'}")
    return summary


def source_range_tags(location: Path | None = None) -> dict[str, str]:
    """Partition-range run tags covering the hours that hold events in a source location (default: configured)."""
    from recopipeline.defs.partitions import first_hour, hourly_partitions, range_tags
    from recopipeline.defs.resources import default_resources
    from recopipeline.lib.hourly import parse_hour_key, source_hours

    last_key = hourly_partitions.get_last_partition_key()
    if last_key is None:
        raise ValueError(f"no hour has ended since RECOPIPELINE_PARTITION_START ({settings.partition_start()})")
    location = location or default_resources()["source"].location()
    return range_tags(*source_hours(location, first_hour(), parse_hour_key(last_key)))


def partition_tags(hours: str) -> dict[str, str]:
    """Run tags for one hour (`2026-09-30-23:00`) or a range of hours (`2026-09-30-00:00...2026-09-30-23:00`).

    Hours that are not partitions fail here, in one line, before a run starts (`check_hours`).
    """
    from recopipeline.defs.partitions import check_hours, range_tags
    from recopipeline.lib.hourly import hour_key, parse_hour_key

    keys = [key.strip() for key in hours.split("...")]
    try:
        parsed = [parse_hour_key(key) for key in keys]
    except ValueError:
        raise ValueError(f"hours {hours!r} are not like 2026-09-30-23:00 or 2026-09-30-00:00...2026-09-30-23:00")
    if len(parsed) > 2 or parsed[0] > parsed[-1]:
        raise ValueError(f"hours {hours!r} are not a range first...last")
    check_hours(parsed[0], parsed[-1])
    if len(parsed) == 1:
        return {"dagster/partition": hour_key(parsed[0])}
    return range_tags(*parsed)


def names_partitions(tags: dict[str, str] | None) -> bool:
    """Whether run tags already say which partition or hours to run."""
    return bool(tags) and any(key in tags for key in ("dagster/partition", "dagster/asset_partition_range_start"))



def release_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark as failed the runs this host executed directly whose process is gone (killed), freeing their pool slots.

    Runs launched through the daemon are watched by its run monitoring; a run executed by `recopipeline
    materialize` that was killed would otherwise hold its steps' concurrency slots for ever.
    """
    released = []
    in_progress = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]
    for run in instance.get_runs(dg.RunsFilter(statuses=in_progress)):
        launched_by = run.tags.get(LAUNCHED_BY_TAG, "")
        host, _, pid = launched_by.rpartition(":")
        if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
            continue
        instance.report_run_failed(run, f"the process that executed this run ({launched_by}) is gone")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
    return released


def _this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
