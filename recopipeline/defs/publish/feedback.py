"""Feedback: click-through rates per A/B variant and per strategy, and clicks fed back as interaction events.

Both assets read the `recommendation_feedback` table of the serving database (impressions and clicks recorded
through the read API or the MCP server).
"""

import os
import uuid
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pandas as pd

from recopipeline.defs.publish.assets import GROUP, serving_kind
from recopipeline.defs.resources import ServingResource, SourceResource, WarehouseResource
from recopipeline.defs.stage import OWNERS, code_references, describe
from recopipeline.lib import settings
from recopipeline.lib.contract import CUSTOMER_INTERACTIONS
from recopipeline.lib.sources import SourceError, source_files
from recopipeline.serving import feedback as feedback_module
from recopipeline.serving.database import utcnow
from recopipeline.serving.feedback import click_events, click_through_rates

FEEDBACK_FILE_PREFIX = "feedback_clicks_"
CODE = code_references(__file__, feedback_module.__file__)


class FeedbackWindow(dg.Config):
    days: int = 7  # click-through rates cover the feedback of the last `days` days


@dg.asset(
    group_name=GROUP,
    description=(
        "Impressions, clicks and click-through rate per A/B variant and per recommendation type over the last days, "
        "from the serving database's feedback table; the rates are numeric metadata, plotted across runs."
    ),
    kinds={"duckdb", serving_kind(settings.serving_url())},
    owners=OWNERS,
    metadata=CODE,
)
def recommendation_feedback_metrics(
    config: FeedbackWindow, warehouse: WarehouseResource, serving: ServingResource
) -> dg.MaterializeResult:
    database = serving.database()
    try:
        rates = click_through_rates(database, since=utcnow() - timedelta(days=config.days))
    finally:
        database.dispose()
    store = warehouse.get()
    with store.session() as con:
        con.register("rates", rates)
        store.write(con, "recommendation_feedback_metrics", "SELECT * FROM rates", order_by="dimension, value")
        metadata = describe(con, store, "recommendation_feedback_metrics", None)
    store.refresh_catalog(["recommendation_feedback_metrics"])
    variants = rates[rates.dimension == "variant"]
    impressions, clicks = int(variants.impressions.sum()), int(variants.clicks.sum())
    numbers: dict[str, dg.MetadataValue] = {
        "impressions": dg.MetadataValue.int(impressions),
        "clicks": dg.MetadataValue.int(clicks),
        "ctr": dg.MetadataValue.float(clicks / impressions if impressions else 0.0),
        "window_days": dg.MetadataValue.int(config.days),
    }
    for row in rates.itertuples():
        prefix = "variant" if row.dimension == "variant" else "type"
        if pd.notna(row.ctr):
            numbers[f"ctr/{prefix}/{row.value}"] = dg.MetadataValue.float(float(row.ctr))
        numbers[f"impressions/{prefix}/{row.value}"] = dg.MetadataValue.int(int(row.impressions))
        numbers[f"clicks/{prefix}/{row.value}"] = dg.MetadataValue.int(int(row.clicks))
    return dg.MaterializeResult(metadata={**metadata, **numbers})


@dg.asset(
    group_name=GROUP,
    description=(
        "Clicks on served recommendations as `click` interaction events, written per day into the source "
        "location's customer_interactions/ folder (feedback_clicks_<date>.parquet or .csv), where the "
        "customer_interactions ingest picks them up."
    ),
    kinds={"duckdb", "parquet", serving_kind(settings.serving_url())},
    owners=OWNERS,
    metadata=CODE,
)
def feedback_clicks(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    source: SourceResource,
    serving: ServingResource,
) -> dg.MaterializeResult:
    database = serving.database()
    try:
        events = click_events(database)
    finally:
        database.dispose()
    written: list[str] = []
    if len(events):
        written = write_click_files(events, source.location())
        context.log.info(f"wrote {len(events)} click events into {len(written)} files")
    store = warehouse.get()
    with store.session() as con:
        con.register("events", events)
        store.write(con, "feedback_clicks", "SELECT * FROM events", order_by="interaction_timestamp, event_id")
        metadata = describe(con, store, "feedback_clicks", None)
    store.refresh_catalog(["feedback_clicks"])
    return dg.MaterializeResult(
        metadata={**metadata, "input_files": dg.MetadataValue.text("\n".join(written) or "-")}
    )


def write_click_files(events: pd.DataFrame, location: Path) -> list[str]:
    """One file per day of clicks in `<location>/customer_interactions/`, each replaced atomically.

    The file format follows the source's existing files (a source may not mix CSV and Parquet).
    """
    try:
        existing = source_files(location, CUSTOMER_INTERACTIONS)
    except SourceError:
        existing = []
    suffix = ".csv" if existing and existing[0].suffix == ".csv" else ".parquet"
    folder = location / CUSTOMER_INTERACTIONS.name
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for day, rows in events.groupby(events.interaction_timestamp.dt.strftime("%Y%m%d"), sort=True):
        target = folder / f"{FEEDBACK_FILE_PREFIX}{day}{suffix}"
        temp = folder / f".{uuid.uuid4().hex}.tmp"
        try:
            if suffix == ".csv":
                rows.to_csv(temp, index=False)
            else:
                rows.to_parquet(temp, index=False)
            os.replace(temp, target)
        finally:
            if temp.exists():
                temp.unlink()
        written.append(str(target))
    return written
