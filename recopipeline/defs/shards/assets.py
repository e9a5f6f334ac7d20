"""The buckets' partial aggregates (lib/shards.py), one asset each, partitioned by customer bucket.

They exist only with customer buckets (RECOPIPELINE_SHARDS > 1): each step sums one bucket's rows (co-occurrence
counts, buyers, popularity totals, the EASE Gram matrix's entries) and the item-side stages add up every bucket's
files (defs/stage.py).
"""

import time

import dagster as dg

from recopipeline.defs.partitions import bucket_of, bucket_partitions
from recopipeline.defs.resources import TuningResource, WarehouseResource
from recopipeline.defs.stage import KINDS, OWNERS, bucketed_assets, code_references, require_buckets, resolve_as_of
from recopipeline.lib import settings, shards
from recopipeline.lib.keys import owning_assets
from recopipeline.lib.stages import STAGES
from recopipeline.lib.warehouse import SQL_DIR, Warehouse

GROUP = "shards"


def partial_asset(name: str) -> dg.AssetsDefinition:
    """The asset of one partial: a bucket's exact sums, written, then recorded as of the run's as-of time."""
    buckets = settings.customer_shards()
    inputs = shards.partial_inputs(name)

    @dg.asset(
        name=name,
        group_name=GROUP,
        deps=owning_assets(inputs),
        description=f"One customer bucket's exact partial sums for the item-side stages (sql/{name}.sql).",
        pool=name,
        kinds=KINDS,
        owners=OWNERS,
        metadata=code_references(SQL_DIR / f"{name}.sql"),
        partitions_def=bucket_partitions(),
    )
    def _asset(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, tuning: TuningResource
    ) -> dg.MaterializeResult:
        store: Warehouse = shards.bucket_share(warehouse.get(), buckets, processes=1)  # a bucket's DuckDB share
        values = tuning.get()
        as_of = resolve_as_of(context, store)
        bucket = bucket_of(context.partition_key)
        require_buckets(store, [i for i in inputs if i in bucketed_assets()], buckets, values, as_of,
                        only=bucket)
        shards.forget_bucket(store, name, bucket)
        staged = store.stage(name)
        started = time.perf_counter()
        try:
            rows = shards.bucket_partial(staged, name, values, as_of, bucket, buckets)
        except BaseException:
            staged.discard()
            raise
        staged.publish()
        shards.record_bucket(store, name, bucket, buckets, values, as_of)
        store.refresh_catalog([name])
        return dg.MaterializeResult(metadata={
            "dagster/row_count": dg.MetadataValue.int(int(rows)),
            "compute_seconds": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
            "as_of": dg.MetadataValue.text(as_of.isoformat()),
        })

    return _asset


def combined_partials() -> list[str]:
    """The partials the item-side assets read (an hourly stage reads its whole inputs instead, see stage_asset)."""
    names = [p for spec in STAGES if not spec.hourly for p in shards.partial_names(spec.name)]
    return list(dict.fromkeys(names))


partial_assets = [partial_asset(name) for name in combined_partials()] if settings.customer_shards() > 1 else []
