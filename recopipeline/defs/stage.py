"""Building blocks shared by the pipeline's assets: the as-of time, SQL steps and their metadata."""


from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb

from recopipeline.defs.quality.derived_checks import derived_check_specs, run_derived_checks
from recopipeline.defs.resources import TuningResource, WarehouseResource
from recopipeline.lib import settings
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import SQL_DIR, Warehouse, load_sql

AS_OF_TAG = "recopipeline/as_of"
OWNERS = ["team:recommendations"]
KINDS = {"duckdb", "parquet"}


def code_references(*files: str | Path) -> dict[str, dg.CodeReferencesMetadataValue]:
    """Asset metadata linking the UI's "Source code" to the files that compute the asset."""
    return {
        "dagster/code_references": dg.CodeReferencesMetadataValue(
            code_references=[dg.LocalFileCodeReference(file_path=str(file)) for file in files]
        )
    }


@dataclass(frozen=True)
class SqlStage:
    """What `sql_asset` knows about one SQL stage; the hourly refresh re-runs the per-customer stages with it."""

    name: str
    inputs: tuple[str, ...]
    prepare: Callable[[duckdb.DuckDBPyConnection, Tuning], None] | None
    order_by: str | None = None  # the row order the asset is written in


SQL_STAGES: dict[str, SqlStage] = {}  # every SQL stage by asset name, filled as the layer modules load


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
    return latest_event_time(warehouse)


def latest_event_time(warehouse: Warehouse) -> datetime:
    parts = [
        f"SELECT max({column}) AS t FROM {warehouse.scan(asset)}"
        for asset, column in (("customer_interactions", "interaction_timestamp"), ("orders", "order_timestamp"))
        if warehouse.exists(asset)
    ]
    if not parts:
        raise dg.Failure("no events to measure recency from: materialize the sources first")
    with warehouse.session() as con:
        (latest,) = con.sql(f"SELECT max(t) FROM ({' UNION ALL '.join(parts)})").fetchall()[0]
    if latest is None:
        raise dg.Failure("the event sources are empty: set RECOPIPELINE_AS_OF to build from no events")
    return latest


def describe(con: duckdb.DuckDBPyConnection, warehouse: Warehouse, asset: str, score_column: str | None) -> dict:
    """Metadata a data engineer looks at: row count, a preview and the score distribution."""
    scan = warehouse.scan(asset)
    (rows,) = con.sql(f"SELECT count(*) FROM {scan}").fetchall()[0]
    preview = con.sql(f"SELECT * FROM {scan} LIMIT 10").df()
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
    return metadata


def sql_asset(
    name: str,
    *,
    group: str,
    inputs: Sequence[str],
    description: str,
    order_by: str,
    score_column: str | None = None,
    prepare: Callable[[duckdb.DuckDBPyConnection, Tuning], None] | None = None,
) -> dg.AssetsDefinition:
    """An asset computed by `sql/<name>.sql` over its upstream assets, written as Parquet."""
    SQL_STAGES[name] = SqlStage(name, tuple(inputs), prepare, order_by)

    @dg.asset(
        name=name,
        group_name=group,
        deps=list(inputs),
        description=description,
        pool=name,  # one writer of this asset at a time across runs (dagster.yaml: pools default_limit 1)
        kinds=KINDS,
        owners=OWNERS,
        metadata=code_references(SQL_DIR / f"{name}.sql"),
        check_specs=derived_check_specs(name),  # the table's invariants, see defs/quality/derived_checks.py
    )
    def _asset(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, tuning: TuningResource
    ) -> dg.MaterializeResult:
        store: Warehouse = warehouse.get()
        values: Tuning = tuning.get()
        as_of = resolve_as_of(context, store)
        with store.session(inputs, variables={**values.as_dict(), "as_of": as_of}) as con:
            if prepare:
                prepare(con, values)
            store.write(con, name, load_sql(name), order_by=order_by)
            metadata = describe(con, store, name, score_column)
        store.refresh_catalog()
        return dg.MaterializeResult(
            metadata={**metadata, "as_of": dg.MetadataValue.text(as_of.isoformat())},
            check_results=run_derived_checks(context, store, values, name, as_of),
        )

    return _asset
