"""Building blocks shared by the pipeline's assets: the as-of time, the stage assets, publishing and metadata."""

import json
import time
import warnings
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb

from recopipeline.defs.quality.derived_checks import derived_check_specs, run_derived_checks
from recopipeline.defs.quality.results import blocking_failures
from recopipeline.defs.partitions import bucket_of, bucket_partitions
from recopipeline.defs.resources import TuningResource, WarehouseResource
from recopipeline.lib import ranking, settings, shards
from recopipeline.lib.bucket_scope import bucket_session
from recopipeline.lib.keys import dictionary_relations, owning_assets, readable_query
from recopipeline.lib.stages import NoEventsError, Split, latest_event_time, per_customer_stages, run_stage, stage
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse

AS_OF_TAG = "recopipeline/as_of"
OWNERS = ["team:recommendations"]
KINDS = {"duckdb", "parquet"}


def code_references(*files: str | Path) -> dict[str, dg.CodeReferencesMetadataValue]:
    """Asset metadata linking the UI's "Source code" to the files that compute the asset."""
    with warnings.catch_warnings():  # the code-reference classes are marked beta; the metadata key is stable
        warnings.simplefilter("ignore", dg.BetaWarning)
        references = [dg.LocalFileCodeReference(file_path=str(file)) for file in files]
        return {"dagster/code_references": dg.CodeReferencesMetadataValue(code_references=references)}


def resolve_as_of(context: dg.AssetExecutionContext, warehouse: Warehouse) -> datetime:
    """The time recency is measured from: run tag, then RECOPIPELINE_AS_OF, then the newest event in the data.

    Never the wall clock, so re-running a materialization reproduces its tables.
    """
    tag = context.run.tags.get(AS_OF_TAG)
    if tag:
        return settings.parse_as_of(tag)
    pinned = settings.pinned_as_of()
    if pinned:
        return pinned
    try:
        return latest_event_time(warehouse)
    except NoEventsError as error:
        raise dg.Failure(str(error)) from None


def publish_if_passed(
    staged: Warehouse, checked: list[dg.AssetCheckResult], log=None
) -> dict[str, dg.MetadataValue]:
    """Make the staged asset current when no blocking check failed; otherwise keep the current version.

    Returns metadata that says which happened.
    """
    failed = blocking_failures(checked)
    if failed:
        staged.discard()
        if log is not None:
            log.error(f"blocking check(s) failed: {', '.join(failed)}; the previous version stays current")
        return {"published": dg.MetadataValue.bool(False),
                "not_published_because": dg.MetadataValue.text(", ".join(failed))}
    staged.publish()
    return {"published": dg.MetadataValue.bool(True)}


def describe(
    con: duckdb.DuckDBPyConnection, warehouse: Warehouse, asset: str, score_column: str | None,
    relation: str | None = None,
) -> dict:
    """Metadata a data engineer looks at: row count, a preview and the score distribution (of `relation` in `con`
    instead of the whole asset, given one: a bucket's rows)."""
    scan = relation or warehouse.scan(asset)
    (rows,) = con.sql(f"SELECT count(*) FROM {scan}").fetchall()[0]
    hidden = " EXCLUDE (model)" if asset == ranking.MODEL else ""  # the model's text is megabytes
    first_rows = f"SELECT *{hidden} FROM {scan} LIMIT 10"
    shown = dictionary_relations(warehouse)  # a table of keys is previewed with the ids next to them
    preview = con.sql(readable_query(con, first_rows, shown)).df()
    metadata: dict = {
        "dagster/row_count": dg.MetadataValue.int(int(rows)),
        "preview": dg.MetadataValue.md(preview.to_markdown(index=False) if len(preview) else "_empty_"),
        "path": dg.MetadataValue.path(warehouse.asset_dir(asset)),
    }
    if score_column and rows:
        low, p50, p90, high = con.sql(
            f"SELECT min({score_column}), quantile_cont({score_column}, 0.5), "
            f"quantile_cont({score_column}, 0.9), max({score_column}) FROM {scan}"
        ).fetchall()[0]
        metadata |= {
            f"{score_column}_min": float(low),
            f"{score_column}_p50": float(p50),
            f"{score_column}_p90": float(p90),
            f"{score_column}_max": float(high),
        }
    if asset == ranking.MODEL and rows:
        metadata |= _model_metadata(con, scan)
    return metadata


def _model_metadata(con: duckdb.DuckDBPyConnection, scan: str) -> dict:
    """The learned ranking's held-out figures as numbers (plotted across runs) and its feature importances."""
    (promoted, reason, model_ndcg, blend_ndcg, customers, importances), = con.sql(
        f"SELECT promoted, reason, holdout_ndcg_model, holdout_ndcg_blend, train_customers, feature_importances "
        f"FROM {scan}"
    ).fetchall()
    gains = sorted(json.loads(importances).items(), key=lambda pair: -pair[1])
    table = "| feature | share of the gain |\n| --- | --- |\n" + "".join(f"| {f} | {g:.4f} |\n" for f, g in gains)
    return {
        "promoted": dg.MetadataValue.bool(bool(promoted)),
        "reason": dg.MetadataValue.text(reason),
        "holdout_ndcg@20_model": dg.MetadataValue.float(float(model_ndcg)),
        "holdout_ndcg@20_blend": dg.MetadataValue.float(float(blend_ndcg)),
        "train_customers": dg.MetadataValue.int(int(customers)),
        "feature_importances": dg.MetadataValue.md(table if gains else "_no model_"),
        **{f"importance/{f}": dg.MetadataValue.float(float(g)) for f, g in gains},
    }


def stage_asset(name: str) -> dg.AssetsDefinition:
    """The asset of one stage of the engine (lib/stages.py): computed, audited by its checks, then published.

    With customer buckets (RECOPIPELINE_SHARDS > 1, lib/shards.py) a per-customer stage is partitioned by bucket
    (a step computes one bucket's file), and an item-side stage that sums over customers is combined from the
    buckets' partial aggregates (defs/shards/assets.py); each refuses inputs that are not all as of the same time.
    """
    spec = stage(name)
    buckets = settings.customer_shards()
    per_bucket = buckets > 1 and spec.split is Split.CUSTOMERS
    # the hourly job recomputes an hourly stage from its whole inputs every hour: partials would be a night old
    partials = shards.partial_names(name) if buckets > 1 and spec.split is Split.NONE and not spec.hourly else ()

    @dg.asset(
        name=name,
        group_name=spec.group,
        deps=[*owning_assets(spec.inputs), *partials],
        description=spec.description,
        pool=name,  # one writer of this asset at a time across runs (dagster.yaml: pools default_limit 1)
        kinds=KINDS | spec.kinds,
        owners=OWNERS,
        metadata=code_references(*spec.source_files),
        check_specs=derived_check_specs(name),  # the table's invariants, see defs/quality/derived_checks.py
        partitions_def=bucket_partitions() if per_bucket else None,
    )
    def _asset(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, tuning: TuningResource
    ) -> dg.MaterializeResult:
        store: Warehouse = warehouse.get()
        if per_bucket:  # a bucket's step: its share of the DuckDB memory limit
            store = shards.bucket_share(store, buckets, processes=1)
        values: Tuning = tuning.get()
        as_of = resolve_as_of(context, store)
        bucket = bucket_of(context.partition_key) if per_bucket else None
        if per_bucket:
            bucketed = [i for i in spec.inputs if i in bucketed_assets()]
            require_buckets(store, bucketed, buckets, values, as_of, only=bucket)
            shards.forget_bucket(store, name, bucket)
        elif partials:
            require_buckets(store, partials, buckets, values, as_of)
        staged = store.stage(name)  # written, audited, then published (see lib/warehouse.py)
        started = time.perf_counter()
        try:
            if per_bucket:
                shards.bucket_stage(staged, name, values, as_of, bucket, buckets)
            elif partials:
                shards.item_stage(staged, name, values, as_of, buckets)
            else:
                run_stage(staged, spec, values, as_of)
                if spec.split is Split.CUSTOMERS:  # bucket files of an earlier split go with this version
                    shards.retire_other_layouts(staged, [name], 1)
            seconds = time.perf_counter() - started
            if per_bucket:  # described and audited on the bucket's rows
                with bucket_session(staged, [name], bucket, buckets) as con:
                    metadata = describe(con, staged, name, spec.score_column, relation=name)
            else:
                with staged.session() as con:
                    metadata = describe(con, staged, name, spec.score_column)
            checked = run_derived_checks(context, staged, values, name, as_of, bucket, buckets)
        except BaseException:
            staged.discard()
            raise
        metadata |= publish_if_passed(staged, checked, context.log)
        if per_bucket and metadata["published"].value:
            shards.record_bucket(store, name, bucket, buckets, values, as_of)
        store.refresh_catalog([name])
        return dg.MaterializeResult(
            metadata={
                **metadata,
                "compute_seconds": dg.MetadataValue.float(round(seconds, 3)),
                "as_of": dg.MetadataValue.text(as_of.isoformat()),
            },
            check_results=checked,
        )

    return _asset


def bucketed_assets() -> set[str]:
    """The assets partitioned by customer bucket when there are buckets: the per-customer stages and the partials."""
    return {spec.name for spec in per_customer_stages()} | set(shards.PARTIALS)


def require_buckets(
    store: Warehouse, assets: list[str] | tuple[str, ...], buckets: int, tuning: Tuning, as_of: datetime,
    only: int | None = None,
) -> None:
    """Fail unless every bucket (or bucket `only`) of each bucketed asset was published as of `as_of` with this
    tuning and bucket count: a bucket that failed or has not run yet never mixes into a newer table."""
    missing = []
    for asset in assets:
        unfinished = shards.unfinished_buckets(store, asset, buckets, tuning, as_of)
        unfinished = [b for b in unfinished if only is None or b == only]
        if unfinished:
            missing.append(f"{asset} (bucket {', '.join(map(str, unfinished))})")
    if missing:
        raise dg.Failure(
            f"not yet published as of {as_of.isoformat()} for {buckets} buckets: {'; '.join(missing)}; "
            "materialize those partitions first"
        )
