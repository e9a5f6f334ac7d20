"""Turning rule outcomes into Dagster asset check results that read well in the UI.

Every result carries counts and, when it fails, a few failing examples as a markdown table.
"""

from __future__ import annotations

import dagster as dg
import duckdb
import pandas as pd

from recopipeline.lib.gx_adapter import SuiteResult
from recopipeline.lib.keys import readable_query

EXAMPLES = 5
WARN = dg.AssetCheckSeverity.WARN
ERROR = dg.AssetCheckSeverity.ERROR


def blocking_failures(checked: list[dg.AssetCheckResult]) -> list[str]:
    """The names of the failed checks that block: every ERROR-severity check of the pipeline is blocking."""
    return [r.check_name for r in checked if not r.passed and r.severity == ERROR]


def markdown(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "_none_")


def violations(
    con: duckdb.DuckDBPyConnection, check_name: str, sql: str, description: str,
    dictionaries: dict[str, str] | None = None, severity: dg.AssetCheckSeverity = ERROR,
) -> dg.AssetCheckResult:
    """A check that passes when `sql` (one row per violation) returns no rows; exact, over the whole table.

    With the key dictionaries (relations by name, lib/keys.py), the examples show the ids next to the keys.
    """
    shown = readable_query(con, sql, dictionaries) if dictionaries is not None else sql
    found = con.sql(f"SELECT count(*) OVER () AS violations, * FROM ({shown}) LIMIT {EXAMPLES}").df()
    count = int(found["violations"].iloc[0]) if len(found) else 0
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=count == 0,
        severity=severity,
        description=description if count == 0 else f"{count:,} violation(s): {description}",
        metadata={"violations": count, "examples": markdown(found.drop(columns="violations"))},
    )


def share(
    con: duckdb.DuckDBPyConnection, check_name: str, sql: str, population: str, limit: float, description: str
) -> dg.AssetCheckResult:
    """WARN when the rows `sql` selects are more than `limit` (a share) of the `population` rows; exact."""
    found = con.sql(f"SELECT count(*) OVER () AS violations, * FROM ({sql}) LIMIT {EXAMPLES}").df()
    count = int(found["violations"].iloc[0]) if len(found) else 0
    ((total,),) = con.sql(f"SELECT count(*) FROM ({population})").fetchall()
    measured = count / total if total else 0.0
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=measured <= limit,
        severity=WARN,
        description=f"{count:,} of {total:,} {description} ({measured:.2%}; warns above {limit:.2%})",
        metadata={
            "violations": count,
            "checked_rows": int(total),
            "share": dg.MetadataValue.float(round(measured, 6)),
            "max_share": dg.MetadataValue.float(limit),
            "examples": markdown(found.drop(columns="violations")),
        },
    )


def expectations(check_name: str, result: SuiteResult, sampled_from: int) -> dg.AssetCheckResult:
    """A Great Expectations suite run on a sample, summarised."""
    failed = result.failed
    summary = (
        f"{len(result.outcomes) - len(failed)} of {len(result.outcomes)} expectations met "
        f"on a sample of {result.rows:,} of {sampled_from:,} rows"
    )
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=result.success,
        severity=ERROR,
        description=summary if not failed else f"{summary}; failed: " + ", ".join(
            f"{o.expectation}({o.target})" for o in failed
        ),
        metadata={
            "suite": result.suite,
            "evaluated_expectations": len(result.outcomes),
            "failed_expectations": len(failed),
            "sample_rows": result.rows,
            "table_rows": sampled_from,
            "expectations": dg.MetadataValue.md(result.markdown()),
        },
    )


def row_count_drift(
    context: dg.AssetExecutionContext, check_name: str, asset: str, rows: int, band: float
) -> dg.AssetCheckResult:
    """WARN when the row count moved more than `band` (a share) since the asset's previous materialization."""
    previous = _previous_row_count(context, asset)
    metadata: dict = {"rows": rows, "band": band}
    if previous is None:
        return dg.AssetCheckResult(
            check_name=check_name, passed=True, severity=WARN, metadata=metadata,
            description="no previous materialization to compare with",
        )
    change = (rows - previous) / previous if previous else (0.0 if rows == 0 else float("inf"))
    metadata |= {"previous_rows": previous, "change": dg.MetadataValue.float(round(change, 4))}
    within = abs(change) <= band
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=within,
        severity=WARN,
        metadata=metadata,
        description=f"row count {previous:,} -> {rows:,} ({change:+.1%}; allowed ±{band:.0%})",
    )


def published_materialization(
    instance: dg.DagsterInstance, asset: str, partition: str | None = None, look_back: int = 20
) -> dg.AssetMaterialization | None:
    """The asset's (partition's) latest recorded materialization whose table became current.

    A materialization whose blocking check failed says `published: false` (its table was discarded): it is not
    what downstream reads, so it is passed over.
    """
    wanted = dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None)
    for record in instance.fetch_materializations(wanted, limit=look_back, ascending=False).records:
        materialization = record.asset_materialization
        published = materialization.metadata.get("published") if materialization else None
        if materialization is not None and (published is None or published.value):
            return materialization
    return None


def _previous_row_count(context: dg.AssetExecutionContext, asset: str) -> int | None:
    """The row count of the asset's (partition's) latest published materialization; the current one is not
    recorded yet while the step runs."""
    partition = context.partition_key if context.has_partition_key else None
    materialization = published_materialization(context.instance, asset, partition)
    value = materialization.metadata.get("dagster/row_count") if materialization else None
    return int(value.value) if value is not None else None
