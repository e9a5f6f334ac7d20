"""Ingesting the hours of an event source: which input rows a run owns, and writing them hour by hour.

A run of the hours [start, end) owns the input rows whose event time falls in them (the first partition also
owns every older row), and the rows no hour can hold: an event time that is missing, unreadable or later than
the ingest time plus the future tolerance, and CSV lines that do not parse. The owned rows are validated as
one batch; accepted rows and quarantined rows are written per hour (`<source>/<hour>.parquet`,
`quarantine/<source>__<hour>.parquet`), the rows no hour holds to `quarantine/<source>__unplaced.parquet`,
which every ingest of the source rewrites the same way. Rows of hours outside the run are left to their runs.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from recopipeline.lib.contract import SourceContract
from recopipeline.lib.hourly import KEY_FORMAT, covered_since, event_hour, write_hours
from recopipeline.lib.quarantine import QUARANTINE, quarantine_part
from recopipeline.lib.validation import typed_value
from recopipeline.lib.warehouse import Warehouse, run

RUN_INPUT = "run_input"
RUN_QUARANTINE = "run_quarantine"
UNPLACED = "unplaced"
PARTITION_HOUR = "_partition_hour"  # a run input row's hour, NULL for the rows no hour holds


def create_run_input(
    con: duckdb.DuckDBPyConnection,
    contract: SourceContract,
    raw_input: str,
    raw_types: dict[str, str],
    window: tuple[datetime, datetime],
    first_partition: datetime,
    latest_allowed: datetime,
) -> str:
    """The input rows the run owns, with their `PARTITION_HOUR`: a view when the run starts at the first partition
    (it owns the history, most rows), else a table (an hour's rows, read by one scan of the input instead of one
    scan per pass of the ingest)."""
    start, end = window
    since = covered_since(start, first_partition)
    moment = typed_value(contract, contract.event_time, raw_types)
    latest = f"TIMESTAMP '{latest_allowed:%Y-%m-%d %H:%M:%S.%f}'"
    lower = f" AND _event_time >= TIMESTAMP '{since:%Y-%m-%d %H:%M:%S}'" if since else ""
    run(
        con,
        f"""
        CREATE OR REPLACE TEMP {'TABLE' if since else 'VIEW'} {RUN_INPUT} AS
        SELECT * EXCLUDE (_event_time),
               CASE WHEN _event_time IS NULL OR _event_time > {latest} THEN NULL
                    ELSE {event_hour('_event_time', first_partition)} END AS {PARTITION_HOUR}
        FROM (SELECT *, {moment} AS _event_time FROM {raw_input})
        WHERE _event_time IS NULL OR _event_time > {latest}
           OR (_event_time < TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'{lower})
        """,
    )
    return RUN_INPUT


def write_accepted(
    store: Warehouse,
    con: duckdb.DuckDBPyConnection,
    contract: SourceContract,
    accepted: str,
    window: tuple[datetime, datetime],
    first_partition: datetime,
) -> int:
    """Replace the run's hours of the source with the accepted rows; returns the rows written."""
    counts = write_hours(store, con, contract.name, accepted, event_hour(contract.event_time, first_partition), *window)
    return sum(counts.values())


def write_quarantine(
    store: Warehouse, con: duckdb.DuckDBPyConnection, contract: SourceContract, quarantined: str,
    window: tuple[datetime, datetime],
) -> int:
    """Replace the run's hours of the source's quarantine, and its unplaced rows; returns the rows written.

    `quarantined` gives each row its hour's key as `partition_key` (NULL for the rows no hour holds).
    """
    run(con, f"CREATE OR REPLACE TEMP TABLE {RUN_QUARANTINE} AS {quarantined}")
    hours = write_hours(
        store, con, QUARANTINE, f"SELECT * FROM {RUN_QUARANTINE} WHERE partition_key IS NOT NULL",
        f"strptime(partition_key, '{KEY_FORMAT}')", *window, prefix=quarantine_part(contract.name, ""),
    )
    unplaced = store.write(
        con,
        QUARANTINE,
        f"SELECT * FROM {RUN_QUARANTINE} WHERE partition_key IS NULL",
        partition=quarantine_part(contract.name, UNPLACED),
        order_by="source_file, source_row NULLS LAST, detail",
    )
    return sum(hours.values()) + unplaced


def partition_key() -> str:
    """SQL for the partition key of a row of the run input (NULL for the rows no hour holds)."""
    return f"strftime({PARTITION_HOUR}, '{KEY_FORMAT}')"


def owned_rows(con: duckdb.DuckDBPyConnection) -> int:
    (count,) = run(con, f"SELECT count(*) FROM {RUN_INPUT}")[0]
    return int(count)
