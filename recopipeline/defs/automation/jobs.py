"""Jobs over the asset graph."""

import dagster as dg

full_rebuild_job = dg.define_asset_job(
    name="full_rebuild",
    selection=dg.AssetSelection.all(),
    description="Materialize every asset from the sources to each customer's top recommendations.",
)
