"""The partitions of the pipeline, named: hourly windows (UTC) of the event sources and the hourly refresh.

`customer_interactions`, `cart_activity` and `orders` are partitioned by hour; a partition holds the events
whose event time falls in [hour, hour + 1 h), and the first one also every older event. `customers` and
`products` are snapshots and every derived asset is rebuilt whole, so they are not partitioned. The first hour
is `RECOPIPELINE_PARTITION_START` (see docs/refresh.md). With `RECOPIPELINE_SHARDS` > 1 the per-customer assets
and the buckets' partial aggregates are partitioned by customer bucket (docs/design.md, "Customer shards").
"""

from __future__ import annotations

import warnings
from datetime import datetime, timezone

import dagster as dg

from recopipeline.lib import settings, shards
from recopipeline.lib.hourly import HOUR, KEY_FORMAT, floor_hour, hour_key, parse_hour_key

TIMEZONE = "UTC"

# end_offset=1: the hour in progress is a partition too. Ingesting it takes the events so far (a new file, fed
# back clicks); the hourly run after the hour ends replaces it with the whole hour.
hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date=settings.partition_start(), timezone=TIMEZONE, fmt=KEY_FORMAT, end_offset=1
)

# Backfills of the hourly assets run as one run over the whole range: each source's files are read once and
# every hour of the range is written in the same pass.
single_run_backfill = dg.BackfillPolicy.single_run()
# Dagster marks the assets' `backfill_policy` parameter beta and says so on every load of the code location, on
# stderr of every command and step process; the policy used here is Dagster's documented single-run backfill.
warnings.filterwarnings("ignore", r"Parameter `backfill_policy` .*is currently in beta", dg.BetaWarning)


def bucket_partitions() -> dg.StaticPartitionsDefinition | None:
    """The customer buckets (RECOPIPELINE_SHARDS, lib/shards.py) as the partitions of the per-customer assets:
    `bucket-0000` … ; None with one bucket, where nothing is split."""
    buckets = settings.customer_shards()
    if buckets == 1:
        return None
    return dg.StaticPartitionsDefinition([shards.bucket_key(bucket, buckets) for bucket in range(buckets)])


def bucket_of(partition_key: str) -> int:
    """The bucket number of a `bucket-0003` partition key."""
    return int(partition_key.removeprefix("bucket-"))


def first_hour() -> datetime:
    """The start of the first partition, naive UTC."""
    return settings.first_partition_hour()


def check_hours(first: datetime, last: datetime) -> None:
    """Raise a one-line ValueError unless every hour first .. last is a partition (naive UTC, whole hours).

    The partitions run from `RECOPIPELINE_PARTITION_START` to the hour in progress; an older hour needs an
    earlier start, set before the event sources are loaded (docs/refresh.md, *The first partition*).
    """
    for hour in (first, last):
        if floor_hour(hour) != hour:
            raise ValueError(f"hour {hour:%Y-%m-%d-%H:%M} does not start on a whole hour")
    start = first_hour()
    if first < start:
        raise ValueError(
            f"hour {hour_key(first)} is before the first hourly partition {hour_key(start)}; set "
            f"RECOPIPELINE_PARTITION_START={first:%Y-%m-%d} (or earlier) and load the event sources again — "
            "docs/refresh.md"
        )
    newest = hourly_partitions.get_last_partition_key()
    if newest is None or last > parse_hour_key(newest):
        newest_part = f" (the newest hourly partition is {newest})" if newest else ""
        raise ValueError(f"hour {hour_key(last)} has not started yet{newest_part}")


def run_window(context: dg.AssetExecutionContext) -> tuple[datetime, datetime]:
    """The [start, end) of the hours this run materializes (one hour, or a backfill's range), naive UTC."""
    window = context.partition_time_window
    return _naive_utc(window.start), _naive_utc(window.end)


def range_tags(first: datetime, last: datetime) -> dict[str, str]:
    """Run tags that make one run materialize the hours first .. last (inclusive) of every hourly asset."""
    return {
        "dagster/asset_partition_range_start": first.strftime(KEY_FORMAT),
        "dagster/asset_partition_range_end": last.strftime(KEY_FORMAT),
    }


def last_complete_hour(moment: datetime) -> datetime:
    """The start of the newest hour that has ended at `moment` (naive UTC)."""
    return _naive_utc(moment).replace(minute=0, second=0, microsecond=0) - HOUR


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment
