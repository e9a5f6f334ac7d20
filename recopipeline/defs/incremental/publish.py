"""Publishing an hour's refreshed customers: their rows replace theirs in the live serving version, and so do the
cold-start list (without products sold out since) and the trending list (recomputed by every hourly run).

Serving never goes back in time: an hour is published only when it ends after the as-of time of the nightly
tables and after the newest hour already published into the live version. Re-running or backfilling older
hours recomputes them in the warehouse but leaves what is served alone.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
from sqlalchemy import func, select

from recopipeline.lib.hourly import hour_key
from recopipeline.lib.warehouse import Warehouse, load_sql, run
from recopipeline.serving.database import ServingDatabase
from recopipeline.serving.publish import CUSTOMER_COLUMNS, Publication, current_state, publish_customers
from recopipeline.serving.schema import publications


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


def serving_rows(
    store: Warehouse, con: duckdb.DuckDBPyConnection, refresh_asset: str, hour: datetime, variants: list[str]
) -> list[dict]:
    """The hour's refreshed rows shaped as the serving table, by the same SQL as the full publication, with the
    cold-start and trending lists of each variant (`con` holds the catalogue and `product_trending` as the hourly
    run left them, so a product sold out since the nightly run leaves the cold-start list too)."""
    run(con, "CREATE OR REPLACE TEMP TABLE serving_variants (variant VARCHAR)")
    for variant in variants:
        run(con, "INSERT INTO serving_variants VALUES (?)", [variant])
    path = store.partition_path(refresh_asset, hour_key(hour))
    run(con, f"CREATE OR REPLACE TEMP VIEW customer_top_recommendations AS SELECT * FROM read_parquet('{path}')")
    frame = con.sql(
        f"SELECT * FROM ({load_sql('serving_customer_recommendations')}) ORDER BY customer_id, variant, rank"
    ).df()
    return [dict(zip(CUSTOMER_COLUMNS, row)) for row in frame[list(CUSTOMER_COLUMNS)].itertuples(index=False)]


def publish_hour(db: ServingDatabase, rows: list[dict], hour_end: datetime, run_id: str) -> Publication | None:
    """Replace the rows of the hour's customers in the live version; None when there is nobody to publish."""
    if not rows:
        return None
    customers = sorted({row["customer_id"] for row in rows})
    return publish_customers(db, rows, customers, run_id=run_id, generated_at=hour_end)
