"""The hourly refresh: recompute the recommendations of the customers active in one hour, with the nightly stages.

The per-customer stages (`Split.CUSTOMERS` in lib/stages.py: segments -> behaviour -> affinity -> category
preferences -> blended candidates -> top N) run through the same engine as the nightly rebuild, in one
in-memory DuckDB whose inputs hold only the touched customers: their customer row, events, orders and carts
(their whole history up to the as-of time). The tables that describe products across all customers
(popularity, attribute, co-purchase and collaborative similarity) are read as the last nightly rebuild left
them. Every row of a per-customer stage depends only on its own customer's rows and those product tables, so
the touched customers get exactly the rows a full rebuild over the same data would give them with the same
product tables.

A merchandising rule whose validity window opens or closes in the hour changes the lists of customers who may not
be active in it (sql/merchandising_rule_changes.sql says which). For them the stages that apply the rules are
computed again over their nightly candidates, as of the hour's end, and their rows join the hour's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa

from recopipeline.lib.contract import EVENT_SOURCES, MERCHANDISING_RULES
from recopipeline.lib.hourly import hour_key
from recopipeline.lib.stages import (
    CUSTOMER_SOURCES,
    compute_into,
    customer_keyed,
    per_customer_stages,
    shared_tables,
    variables,
)
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse, load_sql, run

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
    """Write the top-N rows of the customers active in `hour`, and of those whose rules changed in it, as the
    asset's partition of that hour."""
    started = time.perf_counter()
    with store.session(shared_tables(), variables=variables(tuning, as_of)) as con:
        run(con, f"CREATE TEMP TABLE touched AS {touched_in_hour(store, con, hour)}")
        (touched,) = run(con, "SELECT count(*) FROM touched")[0]
        refresh_customers(store, con, "touched", tuning)
        fresh = con.sql("SELECT * FROM customer_top_recommendations").to_arrow_table()
        ids = con.sql("SELECT customer_id FROM touched").to_arrow_table()
    reranked = rerank_for_rule_changes(store, ids, tuning, as_of)
    with store.session() as con:
        con.register("fresh", fresh)
        rows_of = "SELECT * FROM fresh" + (" UNION ALL SELECT * FROM reranked" if reranked is not None else "")
        if reranked is not None:
            con.register("reranked", reranked)
        rows = store.write(con, asset, rows_of, partition=hour_key(hour), order_by=OUTPUT_ORDER)
    return Refresh(touched_customers=int(touched), rows=rows, seconds=time.perf_counter() - started)


_WINDOW_EDGE_IN_HOUR = (
    "(valid_from > getvariable('as_of') - INTERVAL 1 HOUR AND valid_from <= getvariable('as_of')) "
    "OR (valid_to > getvariable('as_of') - INTERVAL 1 HOUR AND valid_to <= getvariable('as_of'))"
)


def rerank_for_rule_changes(store: Warehouse, touched: pa.Table, tuning: Tuning, as_of: datetime) -> pa.Table | None:
    """The rows of the stages that apply the merchandising rules, for the customers (other than `touched`, by id)
    whose rules opened or closed in the hour before `as_of`, computed over their nightly tables; None if nobody's."""
    applying = [spec for spec in per_customer_stages() if MERCHANDISING_RULES.name in spec.inputs]
    (spec,) = applying  # the top N: the one per-customer stage after the blend
    nightly = ("product_recommendations", "customer_segments")  # what the changes are looked up in
    if not all(store.exists(name) for name in (MERCHANDISING_RULES.name, *nightly)):
        return None
    with store.session([*shared_tables(), *nightly], variables=variables(tuning, as_of)) as con:
        if not run(con, f"SELECT 1 FROM merchandising_rules WHERE {_WINDOW_EDGE_IN_HOUR} LIMIT 1"):
            return None  # the usual hour: no rule began or ended in it
        con.register("touched_ids", touched)
        run(con, f"CREATE TEMP TABLE merchandising_rule_products AS {load_sql('merchandising_rule_products')}")
        run(
            con,
            f"CREATE TEMP TABLE reranked_customers AS SELECT customer_key "
            f"FROM ({load_sql('merchandising_rule_changes')}) "
            "WHERE customer_key NOT IN (SELECT k.customer_key FROM customer_keys AS k JOIN touched_ids USING (customer_id))",
        )
        if not run(con, "SELECT 1 FROM reranked_customers LIMIT 1"):
            return None
        for name in nightly:
            run(con, f"DROP VIEW {name}")
        for name in spec.inputs:
            if customer_keyed(name):
                run(
                    con,
                    f"CREATE TEMP TABLE {name} AS SELECT * FROM {store.scan(name)} "
                    "WHERE customer_key IN (SELECT customer_key FROM reranked_customers)",
                )
        compute_into(con, spec, tuning)
        return con.sql(f"SELECT * FROM {spec.name}").to_arrow_table()
