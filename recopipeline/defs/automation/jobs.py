"""Jobs over the asset graph.

- `full_rebuild` (the nightly job): ingest the hours of the run's partition range and the customer and product
  snapshots, rebuild every derived asset whole, then publish. Launch it with a partition range (run tags
  `dagster/asset_partition_range_start` / `_end`, as the nightly schedule and `recopipeline materialize` do).
- `hourly_refresh`: for one hour, ingest the snapshots and the hour's events, recompute the recommendations of
  the customers active in it and publish them.
- `ingest_sources`: ingestion only (the file sensor's runs).

Both refresh jobs carry the run tag `recopipeline/lane=refresh`; dagster.yaml lets one such run progress at a
time, so an hourly refresh never reads the nightly tables while a nightly rebuild rewrites them.

`FORKSERVER` is the run config's `execution` section with which `recopipeline materialize` runs a process per
step: each step runs in a process of its own, forked from a server that has imported the code location and
Great Expectations once, instead of a fresh Python that imports them again (Dagster's default, `spawn`). Put it
in a launchpad config or in RECOPIPELINE_RUN_CONFIG for the schedules' and the sensor's runs; small runs are
cheaper still with `execution: config: in_process: {}` (docs/benchmarks.md, "A cheap Dagster run").
"""

import pkgutil

import dagster as dg

import recopipeline.defs
from recopipeline.defs.evaluation.assets import GROUP as EVALUATION
from recopipeline.defs.incremental.assets import GROUP as INCREMENTAL
from recopipeline.defs.shards.assets import combined_partials
from recopipeline.lib import settings, shards
from recopipeline.lib.contract import EVENT_SOURCES
from recopipeline.lib.stages import hourly_stages
from recopipeline.runner import SHARD_JOBS

LANE_TAG = "recopipeline/lane"
REFRESH_LANE = {LANE_TAG: "refresh"}
SNAPSHOT_SOURCES = ("customers", "products", "merchandising_rules")


def code_location_modules() -> list[str]:
    """The modules a step process imports to rebuild its job: the entry point and every module under `defs/`."""
    found = pkgutil.walk_packages(recopipeline.defs.__path__, prefix="recopipeline.defs.")
    return ["recopipeline.definitions", *sorted(module.name for module in found)]


# the forkserver imports these once per run; great_expectations after the modules that configure it
PRELOAD_MODULES = [*code_location_modules(), "great_expectations"]
FORKSERVER = {"execution": {"config": {"multiprocess": {"start_method": {"forkserver": {
    "preload_modules": PRELOAD_MODULES,
}}}}}}

sources = dg.AssetSelection.assets(*SNAPSHOT_SOURCES, *EVENT_SOURCES)

# the offline evaluation builds its own warehouse from real data: not part of the nightly rebuild
NIGHTLY = dg.AssetSelection.all() - dg.AssetSelection.groups(INCREMENTAL, EVALUATION)
BUCKET_LANE = {LANE_TAG: "buckets"}  # bucket runs of one phase run side by side

if settings.customer_shards() == 1:
    full_rebuild_job = dg.define_asset_job(
        name="full_rebuild",
        selection=NIGHTLY,
        tags=REFRESH_LANE,
        description=(
            "The nightly rebuild: ingest the snapshots and the hours of the run's range, rebuild every derived "
            "asset from all ingested hours, then publish. Launch it with a partition range."
        ),
    )
    shard_phase_jobs: list = []
else:
    # With customer buckets the nightly rebuild is five jobs, run in this order (SHARD_PHASES): a job holds
    # assets of one partitioning only, and each phase reads every bucket of the one before.
    phases = shards.plan()
    first = dg.AssetSelection.assets(*(s.name for s in phases.first), *combined_partials())
    item_side = dg.AssetSelection.assets(*(s.name for s in phases.item))
    per_customer = dg.AssetSelection.assets(*(s.name for s in phases.customers))
    ingest = NIGHTLY - (first | item_side | per_customer).downstream()
    full_rebuild_job = dg.define_asset_job(
        name="full_rebuild",
        selection=ingest,
        tags=REFRESH_LANE,
        description=(
            "With customer buckets, the nightly rebuild's first job: ingest the snapshots and the hours of the "
            "run's range and the assets that read no customer; then shard_partials per bucket, shard_item_side, "
            "shard_customers per bucket and shard_publish (`recopipeline materialize` runs all five)."
        ),
    )
    shard_phase_jobs = [
        dg.define_asset_job(
            name="shard_partials", selection=first, tags=BUCKET_LANE,  # partitioned by bucket, as its assets
            description="Per customer bucket: its behaviour tables and its partial sums for the item-side stages.",
        ),
        dg.define_asset_job(
            name="shard_item_side", selection=item_side, tags=REFRESH_LANE,
            description="Once: every item-side table, from the partial sums of all buckets.",
        ),
        dg.define_asset_job(
            name="shard_customers", selection=per_customer, tags=BUCKET_LANE,
            description="Per customer bucket: the blend, the learned ranks, the top N and the placement lists.",
        ),
        dg.define_asset_job(
            name="shard_publish", selection=NIGHTLY - ingest - first - item_side - per_customer, tags=REFRESH_LANE,
            description="Once every bucket is done: the serving tables, published in one transaction.",
        ),
    ]

SHARD_PHASES = ("full_rebuild", *SHARD_JOBS)

hourly_refresh_job = dg.define_asset_job(
    name="hourly_refresh",
    selection=sources | dg.AssetSelection.assets(*(spec.name for spec in hourly_stages())) | dg.AssetSelection.groups(INCREMENTAL),
    tags=REFRESH_LANE,
    description=(
        "Ingest one hour (and the customer, product and rule snapshots), recompute the trending list and the "
        "recommendations of the customers active in it with the nightly SQL, and publish them."
    ),
)

ingest_sources_job = dg.define_asset_job(
    name="ingest_sources",
    selection=sources,
    description="Ingest source files: the snapshots whole, the event sources for the hours of the run's range.",
)
