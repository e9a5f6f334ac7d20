"""The validated ingest of one source: its files read, every row classified, accepted or quarantined.

Each ingest splits the input rows in two: the rows that pass every rule of `lib/validation.py` become the
source's table, the others go to the quarantine with their reason, so `input = accepted + quarantined`
always holds (the ingest fails if it does not). The event sources are checked against customers and
products, and written hour by hour (`lib/source_hours.py`).

The input is read three times, each a streaming scan: the hashes of the keys that repeat, then every rule on
every row, which keeps only the rejected rows (with their values as read, for the quarantine), then the input
without them, written as the table. Only the rejected rows and the repeated keys are held in memory. An ingest of
hours after the first partition reads the input once instead: the rows it owns (an hour's, few) are kept as a
table for the three passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from recopipeline.lib.contract import MERCHANDISING_RULES, SourceContract
from recopipeline.lib.keys import keyed_rows
from recopipeline.lib.ingest import MALFORMED_LINES, RAW_INPUT, load_raw, raw_types
from recopipeline.lib.quarantine import QUARANTINE, quarantine_part
from recopipeline.lib.source_hours import (
    PARTITION_HOUR,
    create_run_input,
    owned_rows,
    partition_key,
    write_accepted,
    write_quarantine,
)
from recopipeline.lib.sources import SourceError
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.validation import (
    REFERENCES,
    Ingest,
    accepted_sql,
    classify_sql,
    quarantine_sql,
    repeated_keys_sql,
)
from recopipeline.lib.warehouse import Warehouse, remove_leftovers, run

REPEATED = "repeated_keys"
REJECTED = "rejected_rows"


@dataclass(frozen=True)
class IngestCounts:
    """Where the input rows of one ingest went."""

    input_rows: int
    accepted_rows: int
    quarantined_rows: int
    by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def quarantined_share(self) -> float:
        return self.quarantined_rows / self.input_rows if self.input_rows else 0.0


def source_references(contract: SourceContract) -> list[str]:
    """The tables an ingest reads besides its files: customers and products for the event sources (their keys are
    checked against them), the products for the merchandising rules (their checks match rules to products)."""
    if contract.event_time is not None:
        return sorted(REFERENCES.values())
    return ["products"] if contract.name == MERCHANDISING_RULES.name else []


def ingest_source_files(
    store: Warehouse,
    contract: SourceContract,
    files: list[Path],
    tuning: Tuning,
    run_id: str,
    window: tuple[datetime, datetime] | None = None,
    first_partition: datetime | None = None,
) -> IngestCounts:
    """Read, classify and write one source; returns where the rows went.

    With a window (the hours of an event source's run) and the first partition hour, only the input rows the
    run owns are classified and written, hour by hour (see source_hours.py); the input count is theirs.
    """
    if window is not None and first_partition is None:
        raise ValueError("an ingest of hours needs the first partition hour")
    references = source_references(contract)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    remove_leftovers(store.asset_dir(QUARANTINE))  # temporary files of killed ingests (the folder is shared)
    ingest = Ingest(now=now, future_tolerance_hours=tuning.future_tolerance_hours, references=frozenset(references))
    with store.session(references) as con:
        run(con, "SET TimeZone = 'UTC'")
        raw = load_raw(con, contract, files)
        if raw.input_rows == 0 and contract.event_time is None and not contract.optional:
            raise SourceError(f"source '{contract.name}' has no rows; customers and products must not be empty")
        types = raw_types(con)
        relation, input_rows, carried, placed = RAW_INPUT, raw.input_rows, (), "NULL"
        if window is not None:
            relation = create_run_input(
                con, contract, RAW_INPUT, types, window, first_partition, ingest.latest_allowed
            )
            input_rows = owned_rows(con) + raw.malformed_lines
            carried, placed = (PARTITION_HOUR,), partition_key()
        run(con, f"CREATE TEMP TABLE {REPEATED} AS {repeated_keys_sql(contract, types, relation)}")
        repeats = bool(run(con, f"SELECT 1 FROM {REPEATED} LIMIT 1"))
        classified = classify_sql(contract, ingest, types, relation, REPEATED if repeats else None, carried)
        run(con, f"CREATE TEMP TABLE {REJECTED} AS {classified}")
        rejected = quarantine_sql(
            contract, REJECTED, MALFORMED_LINES, run_id=run_id, ingested_at=now, partition_key=placed
        )
        accepted_rows = keyed_rows(store, con, contract, accepted_sql(contract, types, relation, REJECTED))
        if window is None:
            quarantined = store.write(
                con, QUARANTINE, rejected, partition=quarantine_part(contract.name),
                order_by="source_file, source_row NULLS LAST, detail",
            )
            accepted = store.write(con, contract.name, accepted_rows, order_by=", ".join(contract.key))
        else:
            quarantined = write_quarantine(store, con, contract, rejected, window)
            accepted = write_accepted(store, con, contract, accepted_rows, window, first_partition)
        if accepted + quarantined != input_rows:
            raise RuntimeError(
                f"{contract.name}: {input_rows} input rows but {accepted} accepted + {quarantined} quarantined"
            )
        by_reason = dict(
            run(con, f"SELECT reason, count(*) FROM {REJECTED} GROUP BY reason")
            + ([("malformed_line", raw.malformed_lines)] if raw.malformed_lines else [])
        )
    return IngestCounts(input_rows, accepted, quarantined, {k: int(v) for k, v in by_reason.items()})
