"""The quarantine's files: every source row that failed validation, with its reason, kept for people to inspect.

Stored under the warehouse as `quarantine/<source>.parquet` (or `quarantine/<source>__<partition>.parquet` for
a partitioned source), one file per ingest unit, replaced when that unit is ingested again. Sources never
overwrite each other's rows, and the catalog shows all files as one view, `quarantine`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recopipeline.lib.warehouse import Warehouse

QUARANTINE = "quarantine"


def quarantine_part(source: str, partition: str | None = None) -> str:
    """The name of one ingest unit's quarantine file: the source, and the partition when there is one."""
    return source if partition is None else f"{source}__{partition}"


def quarantine_rows(store: Warehouse) -> int:
    """Rows in the whole quarantine (every source and partition)."""
    if not store.exists(QUARANTINE):
        return 0
    with store.session() as con:
        (count,) = con.sql(f"SELECT count(*) FROM {store.scan(QUARANTINE)}").fetchall()[0]
    return int(count)


def quarantine_examples(store: Warehouse, source: str) -> pd.DataFrame:
    """A few of a source's quarantined rows (from its own files only: the other sources' ingests may be
    replacing theirs at the same time)."""
    columns = "reason, detail, raw_row, source_file, source_row"
    own = [path for path in store.files(QUARANTINE)
           if Path(path).stem == source or Path(path).stem.startswith(quarantine_part(source, ""))]
    if not own:
        return pd.DataFrame(columns=columns.split(", "))
    paths = ", ".join("'" + path.replace("'", "''") + "'" for path in own)
    return store.read(
        f"SELECT {columns} FROM read_parquet([{paths}], union_by_name = true) ORDER BY source_file, source_row LIMIT 5"
    )
