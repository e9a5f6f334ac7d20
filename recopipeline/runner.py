"""Running the asset graph on a real Dagster instance, outside the UI (CLI, scripts, tests)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import dagster as dg

from recopipeline.lib import gx_adapter, settings
from recopipeline.lib.run_config import merge
from recopipeline.lib.processes import TasksFailed, each_in_a_process
from recopipeline.run_progress import LAUNCHED_BY_TAG, Progress, RunSummary, RunWatcher, StepDone, condense

REPO_INSTANCE_CONFIG = Path(__file__).parents[1] / "dagster.yaml"


def full_rebuild() -> dg.JobDefinition:
    """The full-rebuild job, reconstructable in the executor's subprocesses."""
    from recopipeline.definitions import defs

    return defs().resolve_job_def("full_rebuild")


def hourly_refresh() -> dg.JobDefinition:
    """The hourly-refresh job, reconstructable in the executor's subprocesses."""
    from recopipeline.definitions import defs

    return defs().resolve_job_def("hourly_refresh")


def _job(name: str) -> dg.JobDefinition:
    from recopipeline.definitions import defs

    return defs().resolve_job_def(name)


def shard_partials() -> dg.JobDefinition:
    return _job("shard_partials")


def shard_item_side() -> dg.JobDefinition:
    return _job("shard_item_side")


def shard_customers() -> dg.JobDefinition:
    return _job("shard_customers")


def shard_publish() -> dg.JobDefinition:
    return _job("shard_publish")


JOBS = {"full_rebuild": full_rebuild, "hourly_refresh": hourly_refresh}
# with customer buckets (RECOPIPELINE_SHARDS > 1) the nightly rebuild's jobs after full_rebuild, in run order;
# the per-bucket ones run once per bucket (defs/automation/jobs.py)
SHARD_JOBS = {"shard_partials": shard_partials, "shard_item_side": shard_item_side,
              "shard_customers": shard_customers, "shard_publish": shard_publish}
PER_BUCKET_JOBS = ("shard_partials", "shard_customers")

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
    if job in SHARD_JOBS and settings.customer_shards() > 1:
        return materialize_sharded(tags, instance, log_level, partition, run_config, progress, executor, jobs=[job])
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; choose one of {', '.join(JOBS)}")
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if selection:
        check_selection(job, selection)
    if job == "full_rebuild" and not selection and settings.customer_shards() > 1:
        return materialize_sharded(tags, instance, log_level, partition, run_config, progress, executor)
    return _materialize_run(selection, tags, instance, log_level, job, partition, run_config, progress, executor)


def _materialize_run(
    selection: Sequence[str] | None,
    tags: dict[str, str] | None,
    instance: dg.DagsterInstance | None,
    log_level: str,
    job: str,
    partition: str | None,
    run_config: Mapping | None,
    progress: Progress | None,
    executor: str,
) -> RunSummary:
    """One run of `job` (see `materialize`), watched as it goes."""
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
        run_id, success = _run_job(JOBS[job], instance, config, tags, keys)
    finally:
        watcher.stop()
    return watcher.finish(run_id, success)


def _run_job(
    job: Callable[[], dg.JobDefinition], instance: dg.DagsterInstance, run_config: Mapping, tags: dict[str, str],
    asset_selection: list[dg.AssetKey] | None = None,
) -> tuple[str, bool]:
    """Execute one run of the job `job` makes (a module-level function, so the run can rebuild it) in this process;
    its run id and whether it succeeded."""
    with dg.execute_job(
        dg.reconstructable(job), instance=instance, run_config=run_config, tags=tags, asset_selection=asset_selection,
    ) as result:
        run_id, success = result.run_id, result.success
    # the run has ended: a step that failed before it started must not keep its pool slot (no daemon here)
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return run_id, success


def materialize_sharded(
    tags: dict[str, str] | None = None,
    instance: dg.DagsterInstance | None = None,
    log_level: str = "INFO",
    partition: str | None = None,
    run_config: Mapping | None = None,
    progress: Progress | None = None,
    executor: str = "auto",
    jobs: Sequence[str] | None = None,
    processes: int | None = None,
) -> RunSummary:
    """The nightly rebuild over customer buckets: full_rebuild (ingest), then a run per bucket of shard_partials,
    shard_item_side, a run per bucket of shard_customers and shard_publish, every run as of the same time.

    `jobs` runs only those of the shard jobs (e.g. one phase again); with `partition` a per-bucket job runs only
    that bucket (`bucket-0001`). The bucket runs of a phase run side by side, each in a process of its own (at
    most `processes`, default the number of cores); a phase starts when every run of the one before has
    succeeded. Returns one summary of them all (its run id is the last run's), failed at the first phase with a
    failed run.
    """
    from recopipeline.defs.automation.shard_sensor import NIGHT_TAG
    from recopipeline.defs.partitions import bucket_partitions
    from recopipeline.defs.resources import default_resources
    from recopipeline.defs.stage import AS_OF_TAG
    from recopipeline.lib.stages import latest_event_time

    instance = instance or instance_from_env()
    summary = RunSummary(run_id="", success=True)
    if jobs is None:
        first = _materialize_run(None, tags, instance, log_level, "full_rebuild", partition, run_config, progress,
                                 executor)
        _add(summary, first)
        if not first.success:
            return summary
    pinned = (tags or {}).get(AS_OF_TAG) or (
        settings.pinned_as_of() or latest_event_time(default_resources()["warehouse"].get())
    ).isoformat()
    phase_tags = {AS_OF_TAG: pinned, LAUNCHED_BY_TAG: _this_process()}
    if jobs is None:  # the runs of one night carry its first run's id, as the daemon's do
        phase_tags[NIGHT_TAG] = summary.run_id
    config = merge({"loggers": {"console": {"config": {"log_level": log_level}}}}, run_config or {})
    config = {key: value for key, value in config.items() if key != "execution"}
    keys = bucket_partitions().get_partition_keys()
    if jobs is not None and partition:
        if partition not in keys:
            raise ValueError(f"bucket {partition!r} is not one of {keys[0]} … {keys[-1]}")
        keys = [partition]
    workers = max(1, min(processes or os.cpu_count() or 2, len(keys)))
    for job in jobs or SHARD_JOBS:
        if job in PER_BUCKET_JOBS:
            runs = _bucket_runs(job, keys, phase_tags, config, workers)
        else:
            runs = [_execute(job, phase_tags, config | execution_config(choose_executor("full_rebuild", executor)),
                             instance)]
        for run in runs:
            _add(summary, run)
            if progress is not None:
                for asset, rows in run.materialized.items():
                    progress(StepDone(asset, {asset: rows}, run.seconds.get(asset)))
        if not all(run.success for run in runs):
            summary.success = False
            return summary
    return summary


def _add(total: RunSummary, run: RunSummary) -> None:
    total.run_id = run.run_id
    total.success = total.success and run.success
    for asset, rows in run.materialized.items():
        total.materialized[asset] = (total.materialized.get(asset) or 0) + (rows or 0)
    for asset, seconds in run.seconds.items():
        total.seconds[asset] = total.seconds.get(asset, 0.0) + seconds
    total.failures.extend(run.failures)


def _execute(
    job: str, tags: dict[str, str], run_config: Mapping, instance: dg.DagsterInstance | None = None
) -> RunSummary:
    """Execute one run of a shard job in this process and summarise it from its events."""
    instance = instance or instance_from_env()
    run_id, success = _run_job(SHARD_JOBS[job], instance, run_config, tags)
    summary = RunWatcher(instance, {}, None).finish(run_id, success)
    if not success and not summary.failures:
        summary.failures.append(f"{job} {tags.get('dagster/partition', '')} failed".strip())
    return summary


def _execute_bucket(run: tuple[str, str, dict[str, str], Mapping]) -> RunSummary:
    """One bucket's run of a per-bucket job (job, partition key, tags, run config), in a process of its own (its
    steps in that process)."""
    job, key, tags, run_config = run
    config = dict(run_config) | {"execution": {"config": {"in_process": {}}}}
    return _execute(job, {**tags, "dagster/partition": key}, config)


def _bucket_runs(
    job: str, keys: list[str], tags: dict[str, str], run_config: Mapping, workers: int
) -> list[RunSummary]:
    """A run of `job` per bucket partition, each in a new process, `workers` at a time."""
    runs = [(job, key, tags, dict(run_config)) for key in keys]
    try:
        return each_in_a_process(_execute_bucket, runs, workers, ["recopipeline.runner", "recopipeline.definitions"])
    except TasksFailed as failed:
        raise failed.failures[0][1] from None


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
