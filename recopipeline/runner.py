"""Running the asset graph on a real Dagster instance, outside the UI (CLI, scripts, tests)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

import dagster as dg

from recopipeline.lib import gx_adapter, settings
from recopipeline.lib.run_config import merge
from recopipeline.run_progress import Progress, RunSummary, RunWatcher, condense

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

EXECUTORS = ("auto", "in_process", "multiprocess")
# `auto` runs the steps of a small run in this process, one after another: a step process costs more than a
# small step's work (docs/benchmarks.md, "A cheap Dagster run"). Above this much source data, and always with
# `multiprocess`, every step runs in a process of its own, forked from a server that has imported the code
# location (`FORKSERVER` in defs/automation/jobs.py), and independent steps run in parallel.
IN_PROCESS_BELOW_BYTES = 64 * 2**20


def instance_from_env() -> dg.DagsterInstance:
    """The instance in DAGSTER_HOME; by default a local one that uses the repository's dagster.yaml.

    Unless the instance's configuration sets `python_logs.python_log_level`, runs started here log at INFO:
    the step processes' default console logger would otherwise print a DEBUG line per step.
    """
    from dagster._core.instance.ref import InstanceRef  # the public API has no instance overrides

    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(settings.LOCAL_HOME / "dagster_home")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    config = Path(home) / "dagster.yaml"
    if not config.exists() and REPO_INSTANCE_CONFIG.exists():
        shutil.copyfile(REPO_INSTANCE_CONFIG, config)
    ref = InstanceRef.from_dir(home)
    if not (ref.settings.get("python_logs") or {}).get("python_log_level"):
        ref = InstanceRef.from_dir(home, overrides={"python_logs": {"python_log_level": "INFO"}})
    return dg.DagsterInstance.from_ref(ref)


def materialize(
    selection: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
    instance: dg.DagsterInstance | None = None,
    log_level: str = "INFO",
    job: str = "full_rebuild",
    partition: str | None = None,
    run_config: Mapping | None = None,
    progress: Progress | None = None,
    executor: str = "auto",
) -> RunSummary:
    """Materialize the whole graph (or the named assets).

    The event sources are ingested for every hour that holds source data, in the same run (single-run backfill),
    unless `partition` (an hour or a range of hours, see `partition_tags`) or the tags name the hours.
    `run_config` (the launchpad's shape, e.g. `resources.tuning.config`) is laid over the console logger's
    level. `progress` is called as each step ends, while the run goes on. `executor` is `in_process`,
    `multiprocess` or `auto` (`choose_executor`); `auto` keeps an `execution` section of `run_config`.
    """
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; choose one of {', '.join(JOBS)}")
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if selection:
        check_selection(job, selection)
    config = merge({"loggers": {"console": {"config": {"log_level": log_level}}}}, run_config or {})
    planned = planned_executor(job, executor, config)
    if planned is not None:
        config = {key: value for key, value in config.items() if key != "execution"} | execution_config(planned)
    check_run_config(job, config)
    keys = [dg.AssetKey(name) for name in selection] if selection else None
    instance = instance or instance_from_env()
    release_abandoned_runs(instance)
    tags = dict(tags or {})
    if partition:
        tags |= partition_tags(partition)
    elif not names_partitions(tags):
        tags = {**source_range_tags(), **tags}
    tags[LAUNCHED_BY_TAG] = _this_process()
    watcher = RunWatcher(instance, {LAUNCHED_BY_TAG: tags[LAUNCHED_BY_TAG]}, progress)
    watcher.start()
    if planned == "in_process":
        gx_adapter.preload()  # its checks validate in this process: the import overlaps the ingest
    try:
        with dg.execute_job(
            dg.reconstructable(JOBS[job]), instance=instance, run_config=config, tags=tags, asset_selection=keys,
        ) as result:
            run_id, success = result.run_id, result.success
        # the run has ended: a step that failed before it started must not keep its pool slot (no daemon here)
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    finally:
        watcher.stop()
    return watcher.finish(run_id, success)


def planned_executor(job: str, executor: str = "auto", run_config: Mapping | None = None) -> str | None:
    """The executor a run gets (`choose_executor`), or None where `auto` keeps the run config's own `execution`."""
    if executor == "auto" and "execution" in (run_config or {}):
        return None
    return choose_executor(job, executor)


def choose_executor(job: str, executor: str = "auto", location: Path | None = None) -> str:
    """`in_process` or `multiprocess`: what `auto` means for this job and the configured source.

    The hourly refresh reads one hour: in process. The full rebuild runs in process while the source's files
    (default: the configured location) hold less than IN_PROCESS_BELOW_BYTES.
    """
    if executor != "auto":
        return executor
    if job == "hourly_refresh":
        return "in_process"
    return "in_process" if source_bytes(location) < IN_PROCESS_BELOW_BYTES else "multiprocess"


def execution_config(executor: str) -> dict:
    """The run config's `execution` section for `in_process` or `multiprocess` (forked from a preloaded server)."""
    if executor == "in_process":
        return {"execution": {"config": {"in_process": {}}}}
    from recopipeline.defs.automation.jobs import FORKSERVER

    return FORKSERVER


def source_bytes(location: Path | None = None) -> int:
    """The size of the source's files (default: the configured location)."""
    from recopipeline.defs.resources import default_resources

    location = location or default_resources()["source"].location()
    if location.is_file():
        return location.stat().st_size
    return sum(path.stat().st_size for path in location.rglob("*") if path.is_file())


@functools.cache
def job_definition(job: str) -> dg.JobDefinition:
    """The job, built once per process for the checks before a run (the run itself reconstructs it)."""
    return JOBS[job]()


def check_selection(job: str, names: Sequence[str]) -> None:
    """Raise ValueError naming the selected assets that the job does not hold."""
    known = {key.to_user_string() for key in job_definition(job).asset_layer.selected_asset_keys}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"job {job} has no asset {', '.join(repr(name) for name in unknown)}")


def check_run_config(job: str, run_config: Mapping) -> None:
    """Raise ValueError, on one line, when the run config does not fit the job (unknown key, wrong type)."""
    try:
        dg.validate_run_config(job_definition(job), run_config)
    except dg.DagsterInvalidConfigError as error:
        reasons = [re.sub(r"^Error \d+: ", "", line.strip()).split(". Expected:")[0]
                   for line in str(error).splitlines() if re.match(r"\s*Error \d+: ", line)]
        raise ValueError(f"run config does not fit job {job}: " + "; ".join(reasons or [condense(str(error))]))


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
