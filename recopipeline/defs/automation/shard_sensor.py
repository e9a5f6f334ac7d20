"""With customer buckets, the nightly rebuild's phases one after another: a run-status sensor.

When a run of one phase job succeeds (full_rebuild, shard_partials, shard_item_side, shard_customers), the sensor
asks for the next phase once every run of this one for the same night has succeeded: one run per bucket for
shard_partials and shard_customers, one run otherwise. Every run of a night carries the night's tag (the
full_rebuild run's id) and its as-of time, so the buckets of a night are computed as of one time; run keys make
each next run be asked for once, however many bucket runs end together. A failed run stops its night: the
served version stays, and running the failed bucket again (UI or `recopipeline materialize --job … --bucket`)
lets the night go on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import dagster as dg

from recopipeline.defs.automation.jobs import SHARD_PHASES, full_rebuild_job, shard_phase_jobs
from recopipeline.defs.partitions import bucket_partitions
from recopipeline.defs.resources import WarehouseResource
from recopipeline.defs.stage import AS_OF_TAG
from recopipeline.lib import settings
from recopipeline.lib.run_config import configured_run_config
from recopipeline.lib.stages import latest_event_time
from recopipeline.run_progress import LAUNCHED_BY_TAG
from recopipeline.runner import PER_BUCKET_JOBS as PER_BUCKET

NIGHT_TAG = "recopipeline/night"
PARTITION_TAG = "dagster/partition"


def next_phase_requests(
    finished_job: str, tags: Mapping[str, str], succeeded: Iterable[Mapping[str, str]], buckets: list[str],
    as_of: str, run_config: Mapping | None = None,
) -> list[dg.RunRequest]:
    """The runs of the phase after `finished_job` (tags: of the run that just succeeded), once each run of its
    phase for the night has succeeded (`succeeded`: the tags of those runs); none while a bucket is still due."""
    if finished_job not in SHARD_PHASES[:-1]:
        return []
    night = tags.get(NIGHT_TAG) or tags["dagster/run_id"]
    if finished_job in PER_BUCKET:
        done = {run.get(PARTITION_TAG) for run in succeeded if run.get(NIGHT_TAG) == night}
        if not set(buckets) <= done:
            return []
    following = SHARD_PHASES[SHARD_PHASES.index(finished_job) + 1]
    night_tags = {NIGHT_TAG: night, AS_OF_TAG: as_of}
    if following in PER_BUCKET:
        return [dg.RunRequest(run_key=f"{night}:{following}:{key}", job_name=following, partition_key=key,
                              tags=night_tags, run_config=run_config or {}) for key in buckets]
    return [dg.RunRequest(run_key=f"{night}:{following}", job_name=following, tags=night_tags,
                          run_config=run_config or {})]


if settings.customer_shards() > 1:

    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[full_rebuild_job, *shard_phase_jobs],
        request_jobs=shard_phase_jobs,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Starts the next phase of a nightly rebuild over customer buckets once every run of the "
        "last one has succeeded.",
    )
    def next_shard_phase(context: dg.RunStatusSensorContext, warehouse: WarehouseResource):
        run = context.dagster_run
        if LAUNCHED_BY_TAG in run.tags:  # `recopipeline materialize` runs the phases of its night itself
            return dg.SkipReason(f"run {run.run_id} was executed by {run.tags[LAUNCHED_BY_TAG]}")
        tags = {**run.tags, "dagster/run_id": run.run_id}
        as_of = run.tags.get(AS_OF_TAG) or (settings.pinned_as_of() or latest_event_time(warehouse.get())).isoformat()
        night = run.tags.get(NIGHT_TAG, run.run_id)
        succeeded = [
            other.tags for other in context.instance.get_runs(dg.RunsFilter(
                job_name=run.job_name, tags={NIGHT_TAG: night}, statuses=[dg.DagsterRunStatus.SUCCESS],
            ))
        ] + [run.tags]
        keys = bucket_partitions().get_partition_keys()
        requests = next_phase_requests(run.job_name, tags, succeeded, keys, as_of, configured_run_config())
        return requests or dg.SkipReason(f"{run.job_name} of night {night}: buckets still running")
