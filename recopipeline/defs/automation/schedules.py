"""When the refresh jobs run, in UTC (the timezone of the hourly partitions and of every stored timestamp).

- `hourly_refresh_schedule`, at minute 5 of every hour: the hour that just ended (the 13:05 tick refreshes
  12:00-13:00). Its as-of time is the hour's end, taken from the partition.
- `nightly_rebuild_schedule`, at 00:30 every day: re-ingests the day that just ended (late files, missed hours)
  and rebuilds everything as of midnight, the tick's day boundary. A run for a past day (the launchpad, with the
  same tags) rebuilds that day's result.

Both start stopped; turn them on in the UI or with `dagster schedule start`. Their runs take the run config in
the YAML file that `RECOPIPELINE_RUN_CONFIG` names (e.g. tuning values), read at each tick.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg

from recopipeline.defs.automation.jobs import full_rebuild_job, hourly_refresh_job
from recopipeline.defs.partitions import TIMEZONE, check_hours, first_hour, last_complete_hour, range_tags
from recopipeline.defs.stage import AS_OF_TAG
from recopipeline.lib.hourly import HOUR, hour_key
from recopipeline.lib.run_config import configured_run_config

HOURLY_MINUTE = 5
NIGHTLY_CRON = "30 0 * * *"


@dg.schedule(
    name="hourly_refresh_schedule",
    job=hourly_refresh_job,
    cron_schedule=f"{HOURLY_MINUTE} * * * *",
    execution_timezone=TIMEZONE,
    description="Every hour at minute 5 (UTC): ingest and refresh the hour that just ended.",
)
def hourly_refresh_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    ended = last_complete_hour(context.scheduled_execution_time)
    try:
        check_hours(ended, ended)
    except ValueError as error:  # the hour precedes the first partition: nothing to refresh yet
        return dg.SkipReason(str(error))
    hour = hour_key(ended)
    return dg.RunRequest(run_key=hour, partition_key=hour, run_config=configured_run_config())


def nightly_run_request(tick: datetime, run_config: dict | None = None) -> dg.RunRequest | dg.SkipReason:
    """The nightly run of a tick: the previous day's 24 hours, rebuilt as of the day's end (midnight UTC).

    Of a day that began before the first partition, the run re-ingests the hours from the first partition on
    (which holds the older events); a day that ended before it is skipped.
    """
    tick_utc = tick.astimezone(timezone.utc).replace(tzinfo=None) if tick.tzinfo else tick
    midnight = tick_utc.replace(hour=0, minute=0, second=0, microsecond=0)
    day = midnight - timedelta(days=1)
    if midnight <= first_hour():
        first = hour_key(first_hour())
        return dg.SkipReason(f"the day {day:%Y-%m-%d} ended before the first hourly partition {first}")
    return dg.RunRequest(
        run_key=f"nightly-{day:%Y-%m-%d}",
        tags={**range_tags(max(day, first_hour()), midnight - HOUR), AS_OF_TAG: midnight.isoformat()},
        run_config=run_config or {},
    )


@dg.schedule(
    name="nightly_rebuild_schedule",
    job=full_rebuild_job,
    cron_schedule=NIGHTLY_CRON,
    execution_timezone=TIMEZONE,
    description="Every day at 00:30 UTC: re-ingest the day that ended, rebuild everything as of midnight, publish.",
)
def nightly_rebuild_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    return nightly_run_request(context.scheduled_execution_time, configured_run_config())
