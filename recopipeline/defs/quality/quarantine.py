"""The quarantine: every source row that failed validation, with its reason, kept for people to inspect.

Stored under the warehouse as `quarantine/<source>.parquet` (or `quarantine/<source>__<partition>.parquet` for
a partitioned source), one file per ingest unit, replaced when that unit is ingested again. Sources never
overwrite each other's rows, and the catalog shows all files as one view, `quarantine`. Dagster shows it as
an asset downstream of the five sources; each ingest records a materialization of it.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from recopipeline.defs.stage import KINDS, OWNERS, code_references
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.validation import REASONS
from recopipeline.lib.warehouse import Warehouse

QUARANTINE = "quarantine"

quarantine = dg.AssetSpec(
    QUARANTINE,
    group_name="quality",
    deps=list(SOURCES),
    kinds=KINDS,
    owners=OWNERS,
    description=(
        "Source rows that failed validation at ingest: source, reason, detail, the raw row as JSON text, "
        "file and row, run id and ingest time. Written by the source assets; see docs/data_quality.md."
    ),
    metadata={
        "reasons": dg.MetadataValue.text(", ".join(REASONS)),
        **code_references(*(Path(__file__).parents[2] / "lib" / f for f in ("validation.py", "ingest.py"))),
    },
)


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
