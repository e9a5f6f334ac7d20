"""Publishing an hour's refreshed customers: their rows replace theirs in the live serving version, and so do the
cold-start list (without products sold out since) and the trending list (recomputed by every hourly run).

Serving never goes back in time: an hour is published only when it ends after the as-of time of the nightly
tables and after the newest hour already published into the live version. Re-running or backfilling older
hours recomputes them in the warehouse but leaves what is served alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import duckdb
from sqlalchemy import func, select

from recopipeline.lib.hourly import hour_key
from recopipeline.lib.warehouse import Warehouse, load_sql, run
from recopipeline.serving.database import ServingDatabase
from recopipeline.serving.publish import (
    CUSTOMER_COLUMNS,
    PLACEMENT_COLUMNS,
    Publication,
    current_state,
    publish_customers,
)
from recopipeline.serving.schema import LISTS, publications


def newest_published_hour_end(db: ServingDatabase) -> datetime | None:
    """The as-of time (hour end) of the newest hourly update applied to the live version, if any."""
    with db.engine.connect() as conn:
        state = current_state(conn)
        if state is None:
            return None
        return conn.execute(
            select(func.max(publications.c.created_at)).where(
                publications.c.kind == "customers", publications.c.version == state.version
            )
        ).scalar()


@dataclass(frozen=True)
class HourRows:
    rows: list[dict]  # customer_recommendations rows
    placement_rows: list[dict] | None  # customer_placement_lists rows of the same customers; None: not written
    unavailable: list[str] = field(default_factory=list)  # products no longer available, as ingested now


def serving_rows(
    store: Warehouse, con: duckdb.DuckDBPyConnection, refresh_asset: str, hour: datetime, variants: list[str],
    lists_asset: str | None = None,
) -> HourRows:
    """The hour's refreshed rows shaped as the serving tables, by the same SQL as the full publication, with the
    cold-start and trending lists of each variant (`con` holds the catalogue and `product_trending` as the hourly
    run left them, so a product sold out since the nightly run leaves the cold-start list too), and the same
    customers' placement lists from `lists_asset`'s partition."""
    run(con, "CREATE OR REPLACE TEMP TABLE serving_variants (variant VARCHAR)")
    for variant in variants:
        run(con, "INSERT INTO serving_variants VALUES (?)", [variant])
    path = store.partition_path(refresh_asset, hour_key(hour))
    run(con, f"CREATE OR REPLACE TEMP VIEW customer_top_recommendations AS SELECT * FROM read_parquet('{path}')")
    frame = con.sql(
        f"SELECT * FROM ({load_sql('serving_customer_recommendations')}) ORDER BY customer_id, variant, rank"
    ).df()
    rows = [dict(zip(CUSTOMER_COLUMNS, row)) for row in frame[list(CUSTOMER_COLUMNS)].itertuples(index=False)]
    unavailable = [
        product for (product,) in run(
            con, "SELECT product_id FROM products WHERE NOT is_active OR stock_quantity <= 0 ORDER BY product_id")
    ]
    lists_path = store.partition_path(lists_asset, hour_key(hour)) if lists_asset else None
    if lists_path is None or not run(con, "SELECT count(*) FROM glob($path)", {"path": lists_path})[0][0]:
        return HourRows(rows, None, unavailable)
    run(con, f"CREATE OR REPLACE TEMP VIEW customer_placement_recommendations AS "
             f"SELECT * FROM read_parquet('{lists_path}')")
    lists = con.sql(f"SELECT * FROM ({load_sql('serving_placement_lists')}) ORDER BY customer_id, placement, rank").df()
    placement_rows = [
        dict(zip(PLACEMENT_COLUMNS, row)) for row in lists[list(PLACEMENT_COLUMNS)].itertuples(index=False)
    ]
    return HourRows(rows, placement_rows, unavailable)


def publish_hour(db: ServingDatabase, hour_rows: HourRows, hour_end: datetime, run_id: str) -> Publication | None:
    """Replace the rows of the hour's customers in the live version, and their placement lists; None when there
    is nobody to publish."""
    if not hour_rows.rows:
        return None
    customers = sorted({row["customer_id"] for row in hour_rows.rows})
    customers_only = [c for c in customers if c not in LISTS]  # the cold-start and trending lists have no placements
    listed = hour_rows.placement_rows is not None
    return publish_customers(
        db, hour_rows.rows, customers,
        placement_rows=hour_rows.placement_rows or [], placement_customers=customers_only if listed else [],
        unavailable=hour_rows.unavailable,
        run_id=run_id, generated_at=hour_end,
    )
