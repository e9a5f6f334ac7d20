"""Warehouses holding every input of a stage, computed by the stage engine, for the tests that compare a compiled
stage with its SQL specification (test_blend.py, test_collaborative.py)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from recopipeline.bench.pipeline import ingest_source
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.sources import resolve_location
from recopipeline.lib.stages import Stage, latest_event_time, run_stages, stage_order
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse


def build_inputs(spec: Stage, source: str, root: Path, customer_share: int = 1) -> Warehouse:
    """A warehouse with every input of `spec`, computed by the stage engine (from 1 in `customer_share` of the
    source's customers)."""
    location = resolve_location(source, root / "input")
    if customer_share > 1:
        location = _some_customers(location, root / "subset", customer_share)
    store = Warehouse(root=str(root / "warehouse"), memory_limit="1GB", threads=2)
    for name in SOURCES:
        ingest_source(store, location, name)
    needed = set(spec.inputs)
    for other in reversed(stage_order()):
        if other.name in needed:
            needed |= set(other.inputs)
    run_stages(store, Tuning(), latest_event_time(store), names=needed - {spec.name} - set(SOURCES))
    return store


def _some_customers(location: Path, target: Path, share: int) -> Path:
    """A copy of the source files with the customers whose id hashes to 0 modulo `share`, and all products."""
    target.mkdir()
    con = duckdb.connect()
    for path in location.glob("*.parquet"):
        relation = con.read_parquet(str(path))
        condition = f"WHERE hash(customer_id) % {share} = 0" if "customer_id" in relation.columns else ""
        con.sql(f"COPY (SELECT * FROM read_parquet('{path}') {condition}) TO '{target / path.name}' (FORMAT parquet)")
    con.close()
    return target
