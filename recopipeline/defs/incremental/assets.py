"""The hourly refresh: the recommendations of the customers active in each hour, recomputed after ingest."""

from datetime import datetime
from pathlib import Path

import dagster as dg

from recopipeline.defs.incremental.publish import newest_published_hour_end, publish_hour, serving_rows
from recopipeline.defs.partitions import hourly_partitions, run_window, single_run_backfill
from recopipeline.defs.publish.assets import serving_kind
from recopipeline.defs.quality.results import published_materialization
from recopipeline.defs.resources import ServingResource, TuningResource, WarehouseResource
from recopipeline.defs.stage import KINDS, OWNERS, code_references
from recopipeline.lib import settings
from recopipeline.lib.hourly import HOUR, hour_key, hours
from recopipeline.lib.keys import owning_assets
from recopipeline.lib.refresh import OUTPUT_ORDER, refresh_hour
from recopipeline.lib.settings import parse_as_of
from recopipeline.lib.stages import CUSTOMER_SOURCES, shared_tables
from recopipeline.serving.publish import PublishError

GROUP = "incremental"
HOURLY_CUSTOMER_REFRESH = "hourly_customer_refresh"
HOURLY_CUSTOMER_PUBLISH = "hourly_customer_publish"
HOURLY_PLACEMENT_REFRESH = "hourly_placement_refresh"  # the refreshed customers' placement lists, written beside
NIGHTLY_TOP_N = "customer_top_recommendations"
HERE = Path(__file__).parent
LIB = Path(__file__).parents[2] / "lib"


@dg.asset(
    name=HOURLY_CUSTOMER_REFRESH,
    group_name=GROUP,
    partitions_def=hourly_partitions,
    backfill_policy=single_run_backfill,
    deps=sorted(owning_assets((*CUSTOMER_SOURCES, *shared_tables()))),
    pool=HOURLY_CUSTOMER_REFRESH,
    kinds=KINDS,
    owners=OWNERS,
    metadata=code_references(__file__, LIB / "refresh.py"),
    description=(
        "The top-N recommendations of the customers active in the hour (an event, order or cart in it), "
        "recomputed with the nightly SQL over their whole history, as of the hour's end, against the last "
        "nightly product tables. Same columns as customer_top_recommendations; the placement lists of the "
        "customers recomputed whole are written beside it (hourly_placement_refresh); see docs/refresh.md."
    ),
)
def hourly_customer_refresh(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, tuning: TuningResource
) -> dg.MaterializeResult:
    store = warehouse.get()
    values = tuning.get()
    start, end = run_window(context)
    touched = rows = 0
    seconds = 0.0
    for hour in hours(start, end):  # a backfill's range: each hour as of its own end
        result = refresh_hour(
            store, HOURLY_CUSTOMER_REFRESH, hour, values, as_of=hour + HOUR, lists_asset=HOURLY_PLACEMENT_REFRESH
        )
        context.log.info(
            f"{hour_key(hour)}: {result.touched_customers} customers, {result.rows} rows in {result.seconds:.2f} s"
        )
        touched, rows, seconds = touched + result.touched_customers, rows + result.rows, seconds + result.seconds
    store.refresh_catalog([HOURLY_CUSTOMER_REFRESH, HOURLY_PLACEMENT_REFRESH])
    return dg.MaterializeResult(
        metadata={
            "touched_customers": dg.MetadataValue.int(touched),
            "dagster/row_count": dg.MetadataValue.int(rows),
            "refresh_seconds": dg.MetadataValue.float(round(seconds, 3)),
            "as_of": dg.MetadataValue.text(end.isoformat()),
            "order": dg.MetadataValue.text(OUTPUT_ORDER),
        }
    )


@dg.asset(
    name=HOURLY_CUSTOMER_PUBLISH,
    group_name=GROUP,
    partitions_def=hourly_partitions,
    backfill_policy=single_run_backfill,
    deps=[HOURLY_CUSTOMER_REFRESH, "product_trending"],
    pool="serving",
    kinds={"duckdb", serving_kind(settings.serving_url())},
    owners=OWNERS,
    metadata=code_references(__file__, HERE / "publish.py"),
    description=(
        "The hour's refreshed customers published: their rows replace theirs in the live serving version, in "
        "one transaction. Hours that end before the nightly tables' as-of time or before the newest hour "
        "already published are not published (serving never goes back in time)."
    ),
)
def hourly_customer_publish(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, tuning: TuningResource, serving: ServingResource
) -> dg.MaterializeResult:
    store = warehouse.get()
    start, end = run_window(context)
    database = serving.database()
    published: list[str] = []
    skipped: list[str] = []
    customers = rows = 0
    try:
        values = tuning.get()
        lists = ["products", "product_popularity", "product_trending"]
        with store.session(lists, variables=values.as_dict()) as con:
            for hour in hours(start, end):
                newest = max(filter(None, [_nightly_as_of(context), newest_published_hour_end(database)]), default=None)
                if newest is not None and hour + HOUR <= newest:
                    skipped.append(hour_key(hour))
                    continue
                batch = serving_rows(
                    store, con, HOURLY_CUSTOMER_REFRESH, hour, list(values.experiment().names),
                    lists_asset=HOURLY_PLACEMENT_REFRESH,
                )
                publication = publish_hour(database, batch, hour + HOUR, context.run.run_id)
                published.append(hour_key(hour))
                if publication:
                    customers, rows = customers + publication.customers, rows + publication.customer_rows
    except PublishError as error:
        raise dg.Failure(description=str(error)) from None
    finally:
        database.dispose()
    if skipped:
        context.log.info(f"not published (older than what is served): {', '.join(skipped)}")
    return dg.MaterializeResult(
        metadata={
            "published_customers": dg.MetadataValue.int(customers),
            "published_rows": dg.MetadataValue.int(rows),
            "published_hours": dg.MetadataValue.int(len(published)),
            "skipped_hours": dg.MetadataValue.text(", ".join(skipped) or "-"),
        }
    )


def _nightly_as_of(context: dg.AssetExecutionContext) -> datetime | None:
    """The as-of time of the nightly top-N table, from its latest published materialization."""
    materialization = published_materialization(context.instance, NIGHTLY_TOP_N)
    value = materialization.metadata.get("as_of") if materialization else None
    return parse_as_of(value.value) if value is not None else None
