"""Hourly windows of the event sources: partition keys, their files, and writing a range of hours.

The hour `2026-09-30-14:00` (Dagster's key) covers [14:00, 15:00) UTC and is stored as
`<root>/<asset>/2026-09-30-1400.parquet`. The first partition also holds every event before it (the history),
so no event is ever outside a partition and a first load records few partitions. Writing a range of hours
replaces exactly those hours: each hour's file is renamed into place, and an hour without rows has no file (a
file left from an earlier write is removed; on object storage, where nothing is renamed or removed, it gets
an empty file). `_schema.parquet`, an empty file with the table's columns, keeps an asset whose hours are all
empty readable as an empty table.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from recopipeline.lib.warehouse import PARQUET, Warehouse, run

KEY_FORMAT = "%Y-%m-%d-%H:%M"  # Dagster's hourly partition key
FILE_FORMAT = "%Y-%m-%d-%H%M"  # the same key as a file name (Warehouse.partition_path drops the colon)
HOUR = timedelta(hours=1)
SCHEMA_PART = "_schema"


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def hour_key(hour: datetime) -> str:
    return hour.strftime(KEY_FORMAT)


def parse_hour_key(key: str) -> datetime:
    return datetime.strptime(key, KEY_FORMAT)


def event_hour(column: str, first_partition: datetime) -> str:
    """SQL for the partition hour of an event time: its hour, or the first partition for older events."""
    return f"greatest(date_trunc('hour', {column}), TIMESTAMP '{first_partition:%Y-%m-%d %H:%M:%S}')"


def covered_since(start: datetime, first_partition: datetime) -> datetime | None:
    """The earliest event time a window starting at `start` holds: None (no bound) for the first partition."""
    return None if start <= first_partition else start


def hours(start: datetime, end: datetime) -> list[datetime]:
    """The starts of the hours in [start, end); both ends must be whole hours."""
    if floor_hour(start) != start or floor_hour(end) != end:
        raise ValueError(f"window {start} .. {end} does not start and end on whole hours")
    count = int((end - start) / HOUR)
    return [start + i * HOUR for i in range(count)]


def write_hours(
    store: Warehouse,
    con: duckdb.DuckDBPyConnection,
    asset: str,
    query: str,
    hour_of: str,
    start: datetime,
    end: datetime,
    *,
    prefix: str = "",
) -> dict[str, int]:
    """Replace the hours in [start, end) of `asset` with the query's rows; returns the rows written per hour key.

    `hour_of` is an SQL expression giving a row's hour (a TIMESTAMP on the hour); every row must fall inside
    the window. With a `prefix`, the files are `<prefix><hour>.parquet` among other files of the asset (the
    quarantine keeps one file per source and hour that way); without one the asset is the hourly table itself.
    """
    window = hours(start, end)
    # a row outside the window fails the write that meets it (no pass of its own); nothing has changed then
    run(
        con,
        f"""
        CREATE OR REPLACE TEMP VIEW _hourly_rows AS
        SELECT * EXCLUDE (_hour_of),
               CASE WHEN _hour_of >= {_timestamp(start)} AND _hour_of < {_timestamp(end)} THEN _hour_of
                    ELSE error('{_OUTSIDE}') END AS _hour_start
        FROM (SELECT *, {hour_of} AS _hour_of FROM ({query}))
        """,
    )
    try:
        counts = _write_partitioned(store, con, asset, window, prefix)
        if not prefix:
            store.remove_file(asset, None)  # a whole-table file from before the asset was partitioned
    except duckdb.Error as error:
        if _OUTSIDE not in str(error):
            raise
        (outside,) = run(
            con,
            f"SELECT count(*) FROM (SELECT {hour_of} AS h FROM ({query})) "
            f"WHERE h IS NULL OR h < {_timestamp(start)} OR h >= {_timestamp(end)}",
        )[0]
        raise ValueError(f"{outside} row(s) of {asset} fall outside the window {start} .. {end}") from None
    if not prefix:
        store.write(con, asset, "SELECT * EXCLUDE (_hour_start) FROM _hourly_rows LIMIT 0", partition=SCHEMA_PART)
    run(con, "DROP VIEW _hourly_rows")
    return counts


_OUTSIDE = "a row falls outside the window of hours being written"


def _timestamp(moment: datetime) -> str:
    return f"TIMESTAMP '{moment:%Y-%m-%d %H:%M:%S}'"


_STAGED = f"SELECT * EXCLUDE (_hour_start), strftime(_hour_start, '{FILE_FORMAT}') AS _hour FROM _hourly_rows"


def _write_partitioned(
    store: Warehouse, con: duckdb.DuckDBPyConnection, asset: str, window: list[datetime], prefix: str
) -> dict[str, int]:
    """The window's first hour with one COPY (in a backfill from the first partition it holds the history, most
    rows, and a plain COPY writes them faster than a partitioned one), the other hours with one COPY with
    PARTITION_BY, both into a hidden local folder; then each hour's file put in place (one object per hour on
    object storage)."""
    staging = Path(store.scratch_dir(asset)) / f".{uuid.uuid4().hex}.hours"
    first = window[0]
    first_file = staging / f"_hour={first.strftime(FILE_FORMAT)}" / "data_0.parquet"
    try:
        first_file.parent.mkdir(parents=True)
        run(
            con,
            f"COPY (SELECT * EXCLUDE (_hour_start) FROM _hourly_rows WHERE _hour_start = {_timestamp(first)}) "
            f"TO '{first_file}' "
            f"({PARQUET})",
        )
        if len(window) > 1:
            run(
                con,
                f"COPY ({_STAGED} WHERE _hour_start > {_timestamp(first)}) TO '{staging}' "
                f"({PARQUET}, PARTITION_BY (_hour), WRITE_PARTITION_COLUMNS false, "
                "OVERWRITE_OR_IGNORE true)",
            )
        counts: dict[str, int] = {}
        for hour in window:
            key = hour_key(hour)
            written = sorted((staging / f"_hour={hour.strftime(FILE_FORMAT)}").glob("*.parquet"))
            if len(written) > 1:  # DuckDB split the hour: merge its pieces into one file first
                paths = ", ".join(f"'{p}'" for p in written)
                merged = staging / f"{key.replace(':', '')}.merged.parquet"
                run(con, f"COPY (SELECT * FROM read_parquet([{paths}])) TO '{merged}' ({PARQUET})")
                written = [merged]
            rows = _rows_in(con, str(written[0])) if written else 0
            if not rows:
                store.remove_file(asset, prefix + key)
                continue
            counts[key] = rows
            store.put_file(asset, prefix + key, str(written[0]))
        return counts
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _rows_in(con: duckdb.DuckDBPyConnection, path: str) -> int:
    (count,) = run(con, f"SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata('{path}')")[0]
    return int(count)


def source_hours(location: Path, first_partition: datetime, last_partition: datetime) -> tuple[datetime, datetime]:
    """The first and last partition hours that hold the event sources' rows in a source location.

    Older events belong to the first partition; events after the last partition are future ones, which every
    run's ingest quarantines, so they do not widen the range. A location
    without events gives the last partition. The files are read by the ingest's reader (lib/ingest.py).
    """
    from recopipeline.lib.contract import SOURCES
    from recopipeline.lib.ingest import event_time_span
    from recopipeline.lib.sources import source_files

    spans = []
    for contract in SOURCES.values():
        if contract.event_time is None:
            continue
        # a missing or unusable file fails here with the ingest's own one-line error, never as a shorter range
        span = event_time_span(source_files(location, contract), contract, before=last_partition + HOUR)
        if span is not None:
            spans.append(span)
    if not spans:
        return last_partition, last_partition
    first = min(max(floor_hour(min(s[0] for s in spans)), first_partition), last_partition)
    last = min(max(floor_hour(max(s[1] for s in spans)), first), last_partition)
    return first, last
