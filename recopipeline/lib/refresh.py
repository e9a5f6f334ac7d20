"""The hourly refresh: recompute the recommendations of the customers active in one hour, with the nightly stages.

The per-customer stages (`Split.CUSTOMERS` in lib/stages.py: segments -> behaviour -> affinity -> category
preferences -> blended candidates -> top N) run through the same engine as the nightly rebuild, in one
in-memory DuckDB whose inputs hold only the touched customers: their customer row, events, orders and carts
(their whole history up to the as-of time). The tables that describe products across all customers
(popularity, attribute, co-purchase and collaborative similarity) are read as the last nightly rebuild left
them. Every row of a per-customer stage depends only on its own customer's rows and those product tables, so
the touched customers get exactly the rows a full rebuild over the same data would give them with the same
product tables.

A customer whose served list holds a product that has become unavailable since (inactive, out of stock, gone
from the catalogue) is recomputed with the hour's customers, so the product leaves the list within the hour and
the list is refilled from the customer's next candidates.

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
from recopipeline.lib.hourly import HOUR, hour_key
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
PLACEMENT_LISTS = "customer_placement_recommendations"  # the other per-customer lists, written beside the top N
PLACEMENT_ORDER = "customer_id, placement, recommendation_rank"
# Columns of the sources that no per-customer stage reads, left out of the touched customers' rows: the events' own
# ids are most of what a read of 20 million events costs. A stage that came to read one would fail the refresh
# with DuckDB's "column not found", never compute without it.
UNREAD_COLUMNS = {"customer_interactions": ("event_id", "session_id")}


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
    # their integer keys: the sources are then read by a semi-join on an integer, not on text ids
    run(
        con,
        f"CREATE TEMP TABLE _touched_keys AS SELECT customer_key FROM {store.scan('customers')} "
        f"WHERE customer_id IN (SELECT customer_id FROM {touched})",
    )
    for source in CUSTOMER_SOURCES:
        unread = UNREAD_COLUMNS.get(source)
        columns = f"* EXCLUDE ({', '.join(unread)})" if unread else "*"
        run(
            con,
            f"CREATE TEMP TABLE {source} AS SELECT {columns} FROM {store.scan(source)} "
            "SEMI JOIN _touched_keys USING (customer_key)",
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


def recent_lists(store: Warehouse, con: duckdb.DuckDBPyConnection, asset: str, hour: datetime) -> list[str]:
    """Table expressions of the lists served since the nightly run at most: the refreshes of the 24 hours before
    `hour` (the asset's partitions that exist)."""
    paths = (store.partition_path(asset, hour_key(hour - HOUR * back)) for back in range(1, 25))
    return [f"read_parquet('{path}')" for path in paths if run(con, "SELECT count(*) FROM glob($path)", {"path": path})[0][0]]


def shown_unavailable(store: Warehouse, recent: list[str]) -> str:
    """SQL for the known customers whose served lists — the nightly top N and placement lists, or a refresh in
    `recent` — hold a product that is no longer available: inactive, out of stock or gone from the catalogue
    (`products` as ingested now). Their whole chain is recomputed, so the lists are refilled from their next
    candidates."""
    nightly = ("customer_top_recommendations", PLACEMENT_LISTS)
    lists = [store.scan(name) for name in nightly if store.exists(name)] + recent
    if not lists:
        return "SELECT NULL::VARCHAR AS customer_id WHERE false"
    shown = " UNION ALL ".join(f"SELECT customer_id, product_id FROM {relation}" for relation in lists)
    return f"""
        SELECT DISTINCT s.customer_id
        FROM ({shown}) AS s
        LEFT JOIN products AS p USING (product_id)
        WHERE (p.product_id IS NULL OR NOT p.is_active OR p.stock_quantity <= 0)
          AND s.customer_id IN (SELECT customer_id FROM {store.scan('customers')})
    """


def refresh_hour(
    store: Warehouse, asset: str, hour: datetime, tuning: Tuning, as_of: datetime, lists_asset: str | None = None
) -> Refresh:
    """Write the top-N rows of the customers active in `hour`, of those shown a product no longer available, and
    of those whose rules began or ended in it, as the asset's partition of that hour; and, if `lists_asset` is
    given, the placement lists (PLACEMENT_LISTS) of the same customers as its partition of that hour.

    A customer of the last kind whose list was refreshed since the nightly run is recomputed whole, like the
    active ones (their nightly candidates are older than their list); the others are ranked again over their
    nightly candidates.
    """
    started = time.perf_counter()
    changed = rule_changed_customers(store, tuning, as_of)
    with store.session(shared_tables(), variables=variables(tuning, as_of)) as con:
        recent = recent_lists(store, con, asset, hour)
        recent_placements = recent_lists(store, con, lists_asset, hour) if lists_asset else []
        con.register("rule_changed", changed)
        recently = " UNION ".join(f"SELECT customer_id FROM {relation}" for relation in recent) or \
            "SELECT NULL::VARCHAR AS customer_id WHERE false"
        run(
            con,
            f"CREATE TEMP TABLE touched AS {touched_in_hour(store, con, hour)} "
            f"UNION {shown_unavailable(store, recent + recent_placements)} "
            f"UNION (SELECT customer_id FROM rule_changed WHERE customer_id IN ({recently}))",
        )
        (touched,) = run(con, "SELECT count(*) FROM touched")[0]
        refresh_customers(store, con, "touched", tuning)
        fresh = con.sql("SELECT * FROM customer_top_recommendations").to_arrow_table()
        placements = con.sql(f"SELECT * FROM {PLACEMENT_LISTS}").to_arrow_table()
        others = con.sql(
            "SELECT customer_key, customer_id FROM rule_changed "
            "WHERE customer_id NOT IN (SELECT customer_id FROM touched)"
        ).to_arrow_table()
    reranked = rerank(store, others, tuning, as_of) if others.num_rows else None
    with store.session() as con:
        con.register("fresh", fresh)
        rows_of = "SELECT * FROM fresh" + (" UNION ALL SELECT * FROM reranked" if reranked is not None else "")
        if reranked is not None:
            con.register("reranked", reranked)
        rows = store.write(con, asset, rows_of, partition=hour_key(hour), order_by=OUTPUT_ORDER)
        if lists_asset:
            # every customer of the hour's rows: the recomputed ones' new lists, the reranked ones' nightly lists
            # (their rules changed, not what they viewed or bought)
            con.register("placements", placements)
            lists_of = "SELECT * FROM placements"
            if reranked is not None and store.exists(PLACEMENT_LISTS):
                con.register("others", others)
                lists_of += (
                    f" UNION ALL SELECT * FROM {store.scan(PLACEMENT_LISTS)} "
                    "WHERE customer_id IN (SELECT customer_id FROM others)"
                )
            store.write(con, lists_asset, lists_of, partition=hour_key(hour), order_by=PLACEMENT_ORDER)
    return Refresh(touched_customers=int(touched), rows=rows, seconds=time.perf_counter() - started)


_NOBODY = pa.table({"customer_key": pa.array([], pa.int32()), "customer_id": pa.array([], pa.string())})


def _applying_rules():
    (spec,) = [s for s in per_customer_stages() if MERCHANDISING_RULES.name in s.inputs]  # the top N
    return spec


def rule_changed_customers(store: Warehouse, tuning: Tuning, as_of: datetime) -> pa.Table:
    """The customers (key and id) whose list a merchandising rule can change because its window began or ended in
    the hour before `as_of` (sql/merchandising_rule_edges.sql, then sql/merchandising_rule_changes.sql over the
    nightly candidates); often nobody."""
    nightly = ("product_recommendations", "customer_segments")  # what the changes are looked up in
    if not all(store.exists(name) for name in (MERCHANDISING_RULES.name, *nightly)):
        return _NOBODY
    with store.session([*shared_tables(), *nightly], variables=variables(tuning, as_of)) as con:
        for name in ("merchandising_rule_products", "merchandising_rule_edges"):
            run(con, f"CREATE TEMP TABLE {name} AS {load_sql(name)}")
        if not run(con, "SELECT 1 FROM merchandising_rule_edges LIMIT 1"):
            return _NOBODY  # the usual hour: no rule began or ended in it
        return con.sql(
            f"SELECT c.customer_key, k.customer_id FROM ({load_sql('merchandising_rule_changes')}) AS c "
            "JOIN customer_keys AS k USING (customer_key)"
        ).to_arrow_table()


def rerank(store: Warehouse, customers: pa.Table, tuning: Tuning, as_of: datetime) -> pa.Table:
    """The rows of the stage that applies the merchandising rules, for `customers` (by key), over their nightly
    candidates and the other nightly tables it reads of them, as of `as_of`."""
    spec = _applying_rules()
    with store.session(shared_tables(), variables=variables(tuning, as_of)) as con:
        con.register("reranked_customers", customers)
        for name in spec.inputs:
            if customer_keyed(name):
                run(
                    con,
                    f"CREATE TEMP TABLE {name} AS SELECT * FROM {store.scan(name)} "
                    "WHERE customer_key IN (SELECT customer_key FROM reranked_customers)",
                )
        compute_into(con, spec, tuning)
        return con.sql(f"SELECT * FROM {spec.name}").to_arrow_table()
