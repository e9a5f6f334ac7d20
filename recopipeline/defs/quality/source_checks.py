"""Asset checks of the sources, evaluated in the source asset's own step right after ingest.

- quarantine_share (blocking): the share of input rows quarantined stays within `max_quarantine_share`.
- unique_key (blocking): the contract key is unique over the whole table (exact DuckDB aggregate). An ingest of
  hours after the first partition checks the keys of the rows it wrote against the whole table (a semi-join): the
  table was unique when it was last published, since this check blocks the publish, so a repeated key must involve
  a row just written.
- keys_present (blocking): every row holds its integer keys (lib/keys.py), over the whole table: a file written
  before the keys existed reads as NULL keys, which the derived stages could not join.
- contract_expectations (blocking): the data contract as a Great Expectations suite, on a sample of accepted
  rows; it checks the accepted table independently of the ingest rules that produced it.
- row_count_drift (WARN): the accepted row count moved at most `row_count_drift_band` since the last ingest.

The merchandising rules also get:
- pins_can_be_honoured (WARN): every pin not yet expired names a product of the catalogue that is available (a pin
  of a product sold out is simply not shown: routine, so it must not hold back the rules or the lists).
- rules_match_products (WARN): every rule in force now matches at least one product.
"""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import duckdb
import pandas as pd

from recopipeline.defs.quality import results
from recopipeline.lib.contract import MERCHANDISING_RULES, SourceContract
from recopipeline.lib.gx_adapter import Expectation, validate
from recopipeline.lib.keys import key_columns
from recopipeline.lib.source_ingest import IngestCounts
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.validation import ALLOWED_VALUES, MINIMUMS
from recopipeline.lib.warehouse import Warehouse, load_sql, run

QUARANTINE_SHARE = "quarantine_share"
UNIQUE_KEY = "unique_key"
KEYS_PRESENT = "keys_present"
CONTRACT_EXPECTATIONS = "contract_expectations"
ROW_COUNT_DRIFT = "row_count_drift"
PINS_CAN_BE_HONOURED = "pins_can_be_honoured"
RULES_MATCH_PRODUCTS = "rules_match_products"


def source_check_specs(contract: SourceContract) -> list[dg.AssetCheckSpec]:
    key = ", ".join(contract.key)
    specs = [
        dg.AssetCheckSpec(
            QUARANTINE_SHARE, asset=contract.name, blocking=True,
            description="At most max_quarantine_share (default 1%) of the input rows are quarantined, for an "
            "ingest of at least quarantine_share_min_rows (default 100) input rows; a smaller one may quarantine "
            "as many rows as the share allows of that minimum (at least one).",
        ),
        dg.AssetCheckSpec(
            UNIQUE_KEY, asset=contract.name, blocking=True,
            description=f"The key ({key}) is unique over the whole table (exact DuckDB aggregate).",
        ),
        dg.AssetCheckSpec(
            KEYS_PRESENT, asset=contract.name, blocking=True,
            description=f"Every row holds its integer keys ({', '.join(key_columns(contract))}), over the whole "
            "table (exact DuckDB scan).",
        ),
        dg.AssetCheckSpec(
            CONTRACT_EXPECTATIONS, asset=contract.name, blocking=True,
            description="Great Expectations suite from the data contract (columns in order, then the integer keys; "
            "required values, allowed values, amounts, key) on a sample of gx_sample_rows accepted rows.",
        ),
        dg.AssetCheckSpec(
            ROW_COUNT_DRIFT, asset=contract.name, blocking=False,
            description="Warns when the accepted row count moved more than row_count_drift_band since the "
            "previous ingest.",
        ),
    ]
    if not key_columns(contract):
        specs = [spec for spec in specs if spec.name != KEYS_PRESENT]
    if contract.name == MERCHANDISING_RULES.name:
        specs += [
            dg.AssetCheckSpec(
                PINS_CAN_BE_HONOURED, asset=contract.name, blocking=False,
                description="Every pin that has not expired names a product of the catalogue that is available "
                "(active, in stock or stock unknown).",
            ),
            dg.AssetCheckSpec(
                RULES_MATCH_PRODUCTS, asset=contract.name, blocking=False,
                description="Warns when a rule in force at the ingest time matches no product.",
            ),
        ]
    return specs


def contract_suite(contract: SourceContract) -> list[Expectation]:
    """The contract as GX expectations."""
    keys = key_columns(contract)
    suite = [Expectation("ExpectTableColumnsToMatchOrderedList", {"column_list": contract.column_names + keys})]
    suite += [
        Expectation("ExpectColumnValuesToNotBeNull", {"column": c.name}) for c in contract.columns if not c.nullable
    ]
    suite += [Expectation("ExpectColumnValuesToNotBeNull", {"column": key}) for key in keys]
    suite += [
        Expectation("ExpectColumnValuesToBeInSet", {"column": name, "value_set": list(allowed)})
        for name, allowed in ALLOWED_VALUES.items()
        if name in contract.column_names
    ]
    suite += [
        Expectation("ExpectColumnValuesToBeBetween", {"column": name, "min_value": bound, "strict_min": not inclusive})
        for name, (bound, inclusive) in MINIMUMS.items()
        if name in contract.column_names
    ]
    if len(contract.key) == 1:
        suite.append(Expectation("ExpectColumnValuesToBeUnique", {"column": contract.key[0]}))
    else:
        suite.append(Expectation("ExpectCompoundColumnsToBeUnique", {"column_list": list(contract.key)}))
    return suite


def run_source_checks(
    context: dg.AssetExecutionContext,
    store: Warehouse,
    contract: SourceContract,
    tuning: Tuning,
    counts: IngestCounts,
    quarantined: pd.DataFrame,
    table_rows: int | None = None,
    written_since: datetime | None = None,
) -> list[dg.AssetCheckResult]:
    """Evaluate the source's checks on the table just written; `quarantined` holds a few example rows.

    `table_rows`: the whole table's rows, for a partitioned source whose ingest wrote only some hours (the sample
    and the drift are then measured on the table, not on the hours just written). `written_since`: for such an
    ingest that did not start at the first partition, the start of its hours (the rows it wrote are the table's
    from then on).
    """
    rules = contract.name == MERCHANDISING_RULES.name
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    inputs = [contract.name, "products"] if rules else [contract.name]
    with store.session(inputs, variables={"as_of": now}) as con:
        unique = results.violations(
            con, UNIQUE_KEY, _key_violations_sql(contract, written_since), f"key ({', '.join(contract.key)}) is unique"
        )
        keys = key_columns(contract)
        present = [
            results.violations(
                con,
                KEYS_PRESENT,
                f"SELECT {', '.join(contract.key)}, {', '.join(keys)} FROM {contract.name} "
                f"WHERE {' OR '.join(f'{k} IS NULL' for k in keys)}",
                f"every row holds its keys ({', '.join(keys)}); re-ingest the hours written before the keys existed",
            )
        ] if keys else []
        merchandising = _rule_checks(con) if rules else []
        sample = con.sql(
            f"SELECT * FROM {contract.name} USING SAMPLE reservoir({int(tuning.gx_sample_rows)} ROWS) REPEATABLE (42)"
        ).df()
    suite = validate(sample, f"{contract.name}_contract", contract_suite(contract))
    table = counts.accepted_rows if table_rows is None else table_rows
    return [
        _quarantine_share(counts, tuning.max_quarantine_share, quarantined, tuning.quarantine_share_min_rows),
        unique,
        *present,
        results.expectations(CONTRACT_EXPECTATIONS, suite, table),
        results.row_count_drift(context, ROW_COUNT_DRIFT, contract.name, table, tuning.row_count_drift_band),
        *merchandising,
    ]


def _key_violations_sql(contract: SourceContract, written_since: datetime | None = None) -> str:
    """The keys held by more than one row, with their copies: over the whole table, or only the keys of the rows
    whose event time is from `written_since` on (each with its copies in the whole table)."""
    key = ", ".join(contract.key)
    rows = contract.name
    if written_since is not None:
        assert contract.event_time is not None, "only an event source is written hour by hour"
        written = (
            f"SELECT {key} FROM {contract.name} "
            f"WHERE {contract.event_time} >= TIMESTAMP '{written_since:%Y-%m-%d %H:%M:%S}'"
        )
        rows = f"{contract.name} SEMI JOIN ({written}) AS written USING ({key})"
    return f"SELECT {key}, count(*) AS copies FROM {rows} GROUP BY ALL HAVING count(*) > 1"


def _rule_checks(con: duckdb.DuckDBPyConnection) -> list[dg.AssetCheckResult]:
    """Whether the pins can be honoured and every rule in force matches a product (as of the session's as_of)."""
    unhonoured = results.violations(
        con,
        PINS_CAN_BE_HONOURED,
        """
        SELECT r.rule_id, trim(r.product_ids) AS product_id,
               CASE WHEN p.product_id IS NULL THEN 'not in the catalogue' ELSE 'not available' END AS problem
        FROM merchandising_rules AS r
        LEFT JOIN products AS p ON p.product_id = trim(r.product_ids)
        WHERE r.action = 'pin' AND (r.valid_to IS NULL OR r.valid_to > getvariable('as_of'))
          AND (p.product_id IS NULL OR NOT p.is_active OR p.stock_quantity <= 0)
        """,
        "every pin that has not expired names an available product of the catalogue",
        severity=results.WARN,
    )
    run(con, f"CREATE OR REPLACE TEMP TABLE merchandising_rule_products AS {load_sql('merchandising_rule_products')}")
    unmatched = results.violations(
        con,
        RULES_MATCH_PRODUCTS,
        """
        SELECT rule_id, action, placement, customer_segment, product_ids, category, brand
        FROM merchandising_rules
        WHERE (valid_from IS NULL OR valid_from <= getvariable('as_of'))
          AND (valid_to IS NULL OR valid_to > getvariable('as_of'))
          AND rule_id NOT IN (SELECT rule_id FROM merchandising_rule_products)
        """,
        "every rule in force matches at least one product",
        severity=results.WARN,
    )
    return [unhonoured, unmatched]


def _quarantine_share(
    counts: IngestCounts, limit: float, quarantined: pd.DataFrame, min_rows: int = 0
) -> dg.AssetCheckResult:
    """The share rule, for an ingest of at least `min_rows` input rows.

    A smaller ingest may quarantine as many rows as the share allows of `min_rows` (at least one): one bad line
    of an hour's two passes, an hour of nothing but bad lines does not.
    """
    share = counts.quarantined_share
    reasons = pd.DataFrame(sorted(counts.by_reason.items(), key=lambda kv: -kv[1]), columns=["reason", "rows"])
    applies = counts.input_rows >= min_rows
    allowed_rows = max(1, int(limit * min_rows))
    rule = (
        f"allowed {limit:.2%}" if applies
        else f"the share rule applies from {min_rows:,} input rows; below, at most {allowed_rows:,} row(s)"
    )
    return dg.AssetCheckResult(
        check_name=QUARANTINE_SHARE,
        passed=share <= limit if applies else counts.quarantined_rows <= allowed_rows,
        severity=results.ERROR,
        description=(
            f"{counts.quarantined_rows:,} of {counts.input_rows:,} input rows quarantined ({share:.2%}; {rule})"
        ),
        metadata={
            "input_rows": counts.input_rows,
            "accepted_rows": counts.accepted_rows,
            "quarantined_rows": counts.quarantined_rows,
            "quarantined_share": dg.MetadataValue.float(round(share, 6)),
            "max_quarantine_share": dg.MetadataValue.float(limit),
            "quarantine_share_min_rows": min_rows,
            "by_reason": results.markdown(reasons),
            "examples": results.markdown(quarantined),
        },
    )
