"""The pipeline's paths without the orchestrator: ingest the sources, run every derived stage in dependency order,
and refresh the customers of one hour.

Each step runs exactly as its asset does (the validated ingest with its hour files, the same SQL, `prepare`,
tuning variables and as-of time, the same written row order; the EASE model and the hourly refresh through the
same functions), so timing it here times the asset's work without Dagster's bookkeeping around it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# The layer modules register their SQL stages in SQL_STAGES when they load.
import recopipeline.defs.behavior.assets  # noqa: F401
import recopipeline.defs.recommendations.assets  # noqa: F401
import recopipeline.defs.similarity.assets  # noqa: F401
from recopipeline.defs.stage import SQL_STAGES, compute_stage
from recopipeline.lib import ease
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.ingest import RAW_INPUT, load_raw, raw_types
from recopipeline.lib.sources import source_files
from recopipeline.lib.tuning import STRATEGIES, Tuning
from recopipeline.lib.validation import typed_columns
from recopipeline.lib.warehouse import Warehouse, load_sql, run


_VARIABLE = re.compile(r"getvariable\('([a-z_0-9]+)'\)")


@dataclass(frozen=True)
class Stage:
    """A derived asset as the runner sees it: its inputs, the tuning values it reads and how to compute it."""

    name: str
    inputs: tuple[str, ...]
    reads: frozenset[str]  # tuning values the computation depends on
    compute: Callable[[Warehouse, Tuning, datetime], int]


def _sql_stage(name: str) -> Stage:
    sql = SQL_STAGES[name]
    reads = set(_VARIABLE.findall(load_sql(name)))
    if sql.prepare:  # the blend weights reach the SQL through prepare's tables
        reads |= {f"weight_{s}" for s in STRATEGIES} | {"ab_variants", "ab_salt"}

    def compute(store: Warehouse, tuning: Tuning, as_of: datetime) -> int:
        with store.session(sql.inputs, variables={**tuning.as_dict(), "as_of": as_of}) as con:
            return compute_stage(store, con, sql, tuning)

    return Stage(name, sql.inputs, frozenset(reads), compute)


def all_stages() -> dict[str, Stage]:
    """Every derived asset of the nightly rebuild: the SQL stages and the EASE model."""
    stages = {name: _sql_stage(name) for name in SQL_STAGES}
    stages[ease.ASSET] = Stage(ease.ASSET, ease.INPUTS, frozenset({"ease_l2", "ease_max_items", "ease_top_k"}),
                               ease.write_ease_item_similarity)
    return stages


def stage_order(stages: dict[str, Stage] | None = None) -> list[Stage]:
    """The stages in an order where every stage comes after its inputs (ties by name)."""
    stages = all_stages() if stages is None else stages
    done: set[str] = set(SOURCES)
    ordered: list[Stage] = []
    pending = dict(sorted(stages.items()))
    while pending:
        ready = [s for s in pending.values() if set(s.inputs) <= done]
        if not ready:
            raise ValueError(f"stages with unmet inputs: {', '.join(pending)}")
        for stage in ready:
            ordered.append(stage)
            done.add(stage.name)
            del pending[stage.name]
    return ordered


def ingest_source(store: Warehouse, location: Path, source: str) -> int:
    """Copy one contract source from its files into the warehouse, typed as the contract says (no validation:
    for inputs already known to be clean, such as the evaluation's splits)."""
    contract = SOURCES[source]
    with store.session() as con:
        run(con, "SET TimeZone = 'UTC'")
        load_raw(con, contract, source_files(location, contract))
        typed = f"SELECT {', '.join(typed_columns(contract, raw_types(con)))} FROM {RAW_INPUT}"
        return store.write(con, source, typed, order_by=", ".join(contract.key))


def ingest_validated(
    store: Warehouse, location: Path, source: str, tuning: Tuning, window: tuple[datetime, datetime] | None
) -> int:
    """Ingest one source as its asset does: validated, rejected rows quarantined, an event source's hours of
    `window` written hour by hour. Returns the rows accepted."""
    from recopipeline.defs.sources.assets import ingest_source_files, source_references  # the Dagster module

    contract = SOURCES[source]
    counts, _ = ingest_source_files(
        store, contract, source_files(location, contract), tuning, "bench", source_references(contract),
        window if contract.event_time is not None else None,
    )
    return counts.accepted_rows


def run_stage(store: Warehouse, stage: Stage, tuning: Tuning, as_of: datetime) -> int:
    """Compute one stage over the warehouse and write it; returns the rows written."""
    return stage.compute(store, tuning, as_of)


def run_stages(store: Warehouse, tuning: Tuning, as_of: datetime, names: Iterable[str] | None = None) -> dict[str, int]:
    """Run the named stages (default: all) in dependency order; returns rows written per stage."""
    wanted = set(names) if names is not None else None
    return {
        stage.name: run_stage(store, stage, tuning, as_of)
        for stage in stage_order()
        if wanted is None or stage.name in wanted
    }
