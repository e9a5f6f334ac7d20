"""Ingesting the sources without the orchestrator, for `bench` and `evaluate`.

The validated ingest is the one the source assets run (rows classified, rejects quarantined, the event sources
written hour by hour); the derived stages run through the stage engine (lib/stages.py) like their assets.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from recopipeline.lib.contract import SOURCES
from recopipeline.lib.ingest import RAW_INPUT, load_raw, raw_types
from recopipeline.lib.keys import keyed_rows
from recopipeline.lib.sources import source_files
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.validation import typed_columns
from recopipeline.lib.warehouse import Warehouse, run


def ingest_source(store: Warehouse, location: Path, source: str) -> int:
    """Copy one contract source from its files into the warehouse, typed as the contract says (no validation:
    for inputs already known to be clean, such as the evaluation's splits)."""
    contract = SOURCES[source]
    with store.session() as con:
        run(con, "SET TimeZone = 'UTC'")
        load_raw(con, contract, source_files(location, contract))
        typed = f"SELECT {', '.join(typed_columns(contract, raw_types(con)))} FROM {RAW_INPUT}"
        return store.write(con, source, keyed_rows(store, con, contract, typed), order_by=", ".join(contract.key))


def ingest_validated(
    store: Warehouse, location: Path, source: str, tuning: Tuning, window: tuple[datetime, datetime] | None
) -> int:
    """Ingest one source as its asset does: validated, rejected rows quarantined, an event source's hours of
    `window` written hour by hour. Returns the rows accepted."""
    from recopipeline.lib.settings import first_partition_hour
    from recopipeline.lib.source_ingest import ingest_source_files

    contract = SOURCES[source]
    counts = ingest_source_files(
        store, contract, source_files(location, contract), tuning, "bench",
        window if contract.event_time is not None else None, first_partition_hour(),
    )
    return counts.accepted_rows
