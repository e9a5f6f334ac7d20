"""Attribution: impressions, clicks, purchases and revenue per placement, A/B variant and strategy, and an A/B
readout with confidence intervals, from the serving database's feedback joined with the warehouse's orders.

The plain logic is `serving/attribution.py`; this asset reads, writes the table and turns the numbers into
numeric metadata, so the Dagster UI plots them across materializations.
"""

from datetime import timedelta

import dagster as dg
import pandas as pd

from recopipeline.defs.publish.assets import GROUP, serving_kind
from recopipeline.defs.resources import ServingResource, TuningResource, WarehouseResource
from recopipeline.defs.stage import OWNERS, code_references, describe
from recopipeline.lib import settings
from recopipeline.lib.warehouse import MissingAssetError
from recopipeline.serving import attribution as attribution_module
from recopipeline.serving.attribution import (
    AB,
    attributed_purchases,
    attribution_table,
    live_experiment,
    read_feedback,
)
from recopipeline.serving.database import utcnow

ASSET = "recommendation_attribution"
PREFIXES = {"placement": "placement", "variant": "variant", "recommendation_type": "type"}
DIFFERENCES = [f"{metric}_diff{end}" for metric in ("ctr", "conversion") for end in ("", "_low", "_high")]


class AttributionWindow(dg.Config):
    # clicks and purchases of the last `days` days; an order may follow its click by attribution_window_hours
    days: int = 28


@dg.asset(
    name=ASSET,
    group_name=GROUP,
    deps=["orders"],
    description=(
        "Impressions, clicks, purchases (reported with the answer's recommendation_id, or an order line after the "
        "customer's last click on the product within attribution_window_hours) and revenue per placement, A/B "
        "variant and recommendation type, with CTR and conversion; and per experiment each variant's difference "
        "from the control in CTR and conversion with a 95 % interval (Newcombe). Numbers are numeric metadata."
    ),
    kinds={"duckdb", serving_kind(settings.serving_url())},
    owners=OWNERS,
    metadata=code_references(__file__, attribution_module.__file__),
)
def recommendation_attribution(
    config: AttributionWindow, warehouse: WarehouseResource, serving: ServingResource, tuning: TuningResource
) -> dg.MaterializeResult:
    if config.days < 1:
        raise dg.Failure(description=f"days must be >= 1, got {config.days}")
    values = tuning.get()
    database = serving.database()
    try:
        feedback = read_feedback(database, since=utcnow() - timedelta(days=config.days))
    finally:
        database.dispose()
    store = warehouse.get()
    try:
        with store.session(["orders"]) as con:
            purchases = attributed_purchases(
                con, feedback.touches, values.attribution_window_hours, values.purchase_match_hours
            )
            table = attribution_table(feedback, purchases)
            con.register("attribution", table)
            store.write(con, ASSET, "SELECT * FROM attribution")  # in the table's own order
            metadata = describe(con, store, ASSET, None)
    except MissingAssetError as error:
        raise dg.Failure(description=str(error)) from None
    store.refresh_catalog([ASSET])
    return dg.MaterializeResult(metadata={**metadata, **attribution_metadata(table, live_experiment(feedback)),
                                          "window_days": dg.MetadataValue.int(config.days)})


def attribution_metadata(table: pd.DataFrame, experiment: str | None) -> dict[str, dg.MetadataValue]:
    """The table's numbers as numeric metadata: totals, `<measure>/<dimension>/<value>` and the live
    experiment's `ab/<variant>/<difference>`."""
    variants = table[table.dimension == "variant"]
    impressions, clicks, purchases = (int(variants[c].sum()) for c in ("impressions", "clicks", "purchases"))
    numbers: dict[str, dg.MetadataValue] = {
        "impressions": dg.MetadataValue.int(impressions),
        "clicks": dg.MetadataValue.int(clicks),
        "purchases": dg.MetadataValue.int(purchases),
        "revenue": dg.MetadataValue.float(float(variants.revenue.sum())),
        "ctr": dg.MetadataValue.float(clicks / impressions if impressions else 0.0),
        "conversion": dg.MetadataValue.float(purchases / clicks if clicks else 0.0),
    }
    for row in table[table.dimension != AB].itertuples():
        key = f"{PREFIXES[row.dimension]}/{row.value}"
        for measure in ("impressions", "clicks", "purchases"):
            numbers[f"{measure}/{key}"] = dg.MetadataValue.int(int(getattr(row, measure)))
        for measure in ("revenue", "ctr", "conversion"):
            if pd.notna(getattr(row, measure)):
                numbers[f"{measure}/{key}"] = dg.MetadataValue.float(float(getattr(row, measure)))
    if experiment is not None:
        numbers["ab/experiment"] = dg.MetadataValue.text(experiment)
        for row in table[(table.dimension == AB) & (table.experiment == experiment)].itertuples():
            for name in DIFFERENCES:
                if pd.notna(getattr(row, name)):
                    numbers[f"ab/{row.value}/{name}"] = dg.MetadataValue.float(float(getattr(row, name)))
    return numbers
