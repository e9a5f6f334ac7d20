"""Building blocks shared by the pipeline's assets: the as-of time, SQL steps and their metadata."""

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb

from recopipeline.defs.quality.derived_checks import derived_check_specs, run_derived_checks
from recopipeline.defs.quality.results import blocking_failures
from recopipeline.defs.resources import TuningResource, WarehouseResource
from recopipeline.lib import settings
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import SQL_DIR, Warehouse, load_sql, run

AS_OF_TAG = "recopipeline/as_of"
OWNERS = ["team:recommendations"]
KINDS = {"duckdb", "parquet"}


def code_references(*files: str | Path) -> dict[str, dg.CodeReferencesMetadataValue]:
    """Asset metadata linking the UI's "Source code" to the files that compute the asset."""
    with warnings.catch_warnings():  # the code-reference classes are marked beta; the metadata key is stable
        warnings.simplefilter("ignore", dg.BetaWarning)
        references = [dg.LocalFileCodeReference(file_path=str(file)) for file in files]
        return {"dagster/code_references": dg.CodeReferencesMetadataValue(code_references=references)}


@dataclass(frozen=True)
class SqlStage:
    """What `sql_asset` knows about one SQL stage; the hourly refresh re-runs the per-customer stages with it."""

    name: str
    inputs: tuple[str, ...]
    prepare: Callable[[duckdb.DuckDBPyConnection, Tuning], None] | None
    order_by: str | None = None  # the row order the asset is written in
    # inputs keyed by customer_id whose rows only affect their own customer's output rows: with these, the stage
    # runs in customer batches of at most `batch_customers` (see compute_stage)
    customer_inputs: tuple[str, ...] = ()
    # the SQL reads the view `anchor_products` and computes rows for those products only: the stage runs in
    # product batches of at most `batch_products` (see compute_stage)
    anchor_products: bool = False


SQL_STAGES: dict[str, SqlStage] = {}  # every SQL stage by asset name, filled as the layer modules load


def compute_stage(store: Warehouse, con: duckdb.DuckDBPyConnection, stage: SqlStage, tuning: Tuning) -> int:
    """Write the stage's table from its SQL in `con` (a session over its inputs); returns the rows written.

    A batched stage runs once per batch and appends the batches before the one atomic write:
    - with `customer_inputs`, per range of at most `batch_customers` customer ids, those inputs narrowed to it
      (every output row depends only on its customer's rows and on tables not keyed by customer);
    - with `anchor_products`, per range of at most `batch_products` product ids, as the view `anchor_products`
      that the SQL reads (every output row belongs to one anchor product).
    The result is the one a single pass would give, with the memory of one batch.
    """
    if stage.prepare:
        stage.prepare(con, tuning)
    sql = load_sql(stage.name)
    batches = stage_batches(con, stage, tuning)
    if len(batches) == 1:
        _narrow(store, con, stage, "TRUE")
        return store.write(con, stage.name, sql, order_by=stage.order_by)
    for number, condition in enumerate(batches):
        _narrow(store, con, stage, condition)
        run(con, f"{'CREATE TEMP TABLE stage_batches AS' if number == 0 else 'INSERT INTO stage_batches'} {sql}")
    _narrow(store, con, stage, "TRUE")
    rows = store.write(con, stage.name, "SELECT * FROM stage_batches", order_by=stage.order_by)
    run(con, "DROP TABLE stage_batches")
    return rows


def stage_batches(con: duckdb.DuckDBPyConnection, stage: SqlStage, tuning: Tuning) -> list[str]:
    """The SQL condition of each batch the stage runs in (`TRUE` alone for one pass)."""
    if stage.anchor_products:
        return id_ranges(con, "product_id", stage.inputs[0], tuning.batch_products)
    if stage.customer_inputs:
        return id_ranges(con, "customer_id", stage.customer_inputs[0], tuning.batch_customers)
    return ["TRUE"]


def _narrow(store: Warehouse, con: duckdb.DuckDBPyConnection, stage: SqlStage, condition: str) -> None:
    """Point the stage's batched views at the rows of one batch (`TRUE`: every row)."""
    if stage.anchor_products:
        run(
            con,
            f"CREATE OR REPLACE TEMP TABLE anchor_products AS "
            f"SELECT DISTINCT product_id FROM {stage.inputs[0]} WHERE {condition}",
        )
    for name in stage.customer_inputs:
        run(con, f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {store.scan(name)} WHERE {condition}")


def id_ranges(con: duckdb.DuckDBPyConnection, column: str, relation: str, size: int) -> list[str]:
    """SQL conditions on `column`, one per range of at most `size` of its distinct values in `relation`."""
    starts = [
        row[0]
        for row in run(
            con,
            f"SELECT {column} FROM (SELECT DISTINCT {column} FROM {relation}) "
            f"QUALIFY (row_number() OVER (ORDER BY {column}) - 1) % {int(size)} = 0 ORDER BY {column}",
        )
    ]
    if len(starts) <= 1:
        return ["TRUE"]
    bounds = [_literal(value) for value in starts[1:]]
    return (
        [f"{column} < {bounds[0]}"]
        + [f"{column} >= {low} AND {column} < {high}" for low, high in zip(bounds, bounds[1:])]
        + [f"{column} >= {bounds[-1]}"]
    )


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


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
    customer_inputs: Sequence[str] = (),
    anchor_products: bool = False,
) -> dg.AssetsDefinition:
    """An asset computed by `sql/<name>.sql` over its upstream assets, written as Parquet."""
    stage = SQL_STAGES[name] = SqlStage(
        name, tuple(inputs), prepare, order_by, tuple(customer_inputs), anchor_products
    )

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
        staged = store.stage(name)  # written, audited, then published (see lib/warehouse.py)
        try:
            with store.session(inputs, variables={**values.as_dict(), "as_of": as_of}) as con:
                compute_stage(staged, con, stage, values)
                metadata = describe(con, staged, name, score_column)
            checked = run_derived_checks(context, staged, values, name, as_of)
        except BaseException:
            staged.discard()
            raise
        metadata |= publish_if_passed(staged, checked, context.log)
        store.refresh_catalog()
        return dg.MaterializeResult(
            metadata={**metadata, "as_of": dg.MetadataValue.text(as_of.isoformat())},
            check_results=checked,
        )

    return _asset
