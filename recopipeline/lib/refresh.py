"""The hourly refresh: recompute the recommendations of the customers active in one hour, with the nightly stages.

The per-customer stages (`Split.CUSTOMERS` in lib/stages.py: segments -> behaviour -> affinity -> category
preferences -> blended candidates -> top N) run through the same engine as the nightly rebuild, in one
in-memory DuckDB whose inputs hold only the touched customers: their customer row, events, orders and carts
(their whole history up to the as-of time). The tables that describe products across all customers
(popularity, attribute, co-purchase and collaborative similarity) are read as the last nightly rebuild left
them. Every row of a per-customer stage depends only on its own customer's rows and those product tables, so
the touched customers get exactly the rows a full rebuild over the same data would give them with the same
product tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import duckdb

from recopipeline.lib.contract import EVENT_SOURCES
from recopipeline.lib.hourly import hour_key
from recopipeline.lib.stages import CUSTOMER_SOURCES, compute_into, per_customer_stages, shared_tables, variables
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse, run

OUTPUT_ORDER = "customer_id, recommendation_rank"


@dataclass(frozen=True)
class Refresh:
    touched_customers: int
    rows: int
    seconds: float


def refresh_customers(store: Warehouse, con: duckdb.DuckDBPyConnection, touched: str, tuning: Tuning) -> None:
    """Create the per-customer stages as temp tables for the customers in the relation `touched`.

    `con` must already have the shared tables as views (Warehouse.session) and the tuning values and the as-of
    time as variables.
    """
    for source in CUSTOMER_SOURCES:
        run(
            con,
            f"CREATE TEMP TABLE {source} AS SELECT * FROM {store.scan(source)} "
            f"WHERE customer_id IN (SELECT customer_id FROM {touched})",
        )
    for spec in per_customer_stages():
        compute_into(con, spec, tuning)


def touched_in_hour(store: Warehouse, con: duckdb.DuckDBPyConnection, hour: datetime) -> str:
    """SQL for the known customers with an event, an order or a cart in the hour (from its partition files)."""
    key = hour_key(hour)
    files = [
        path
        for path in (store.partition_path(source, key) for source in EVENT_SOURCES)
        if run(con, "SELECT count(*) FROM glob($path)", {"path": path})[0][0]
    ]
    if not files:
        return "SELECT NULL::VARCHAR AS customer_id WHERE false"
    paths = ", ".join("'" + path.replace("'", "''") + "'" for path in files)
    return (
        f"SELECT DISTINCT customer_id FROM read_parquet([{paths}], union_by_name = true) "
        f"WHERE customer_id IN (SELECT customer_id FROM {store.scan('customers')})"
    )


def refresh_hour(store: Warehouse, asset: str, hour: datetime, tuning: Tuning, as_of: datetime) -> Refresh:
    """Write the top-N rows of the customers active in `hour` as the asset's partition of that hour."""
    started = time.perf_counter()
    with store.session(shared_tables(), variables=variables(tuning, as_of)) as con:
        run(con, f"CREATE TEMP TABLE touched AS {touched_in_hour(store, con, hour)}")
        (touched,) = run(con, "SELECT count(*) FROM touched")[0]
        refresh_customers(store, con, "touched", tuning)
        rows = store.write(
            con, asset, "SELECT * FROM customer_top_recommendations", partition=hour_key(hour), order_by=OUTPUT_ORDER
        )
    return Refresh(touched_customers=int(touched), rows=rows, seconds=time.perf_counter() - started)
