"""Row-level validation of a source against the data contract, as DuckDB SQL.

Every input row ends up in exactly one place: the source's table (accepted) or the quarantine (with a reason),
so `input rows = accepted + quarantined`. A row gets the FIRST reason that applies, in this order:

  malformed_line           a CSV line that does not split into the header's columns (found while reading)
  wrong_type               a value that does not parse as its contract type (a number with a fraction is no
                           INTEGER: 30.5 is not rounded to 31)
  missing_value            a required column (nullable = False in the contract) is NULL or blank
  value_too_long           a text value longer than its column's `max_length` (in characters)
  unknown_<column>         a value outside its allowed set (interaction_type, cart_status; a rule's action,
                           placement, customer_segment)
  negative_<column>        a negative price, stock_quantity or line_value (a rule's min_price, max_price)
  non_positive_<column>    an order line with quantity <= 0 (a rule's new_within_days)
  invalid_rule             a merchandising rule that cannot apply as written: no condition on products, a
                           value outside its action's range, a pin that names other than one product,
                           valid_to not after valid_from, min_price above max_price
  future_timestamp         a timestamp later than the ingest time plus `future_tolerance_hours` (a rule's
                           validity window may lie in the future)
  unknown_customer         an event of a customer that is not among the accepted customers
  unknown_product          an event of a product that is not among the accepted products
  duplicate_key            a row whose key an earlier valid row already holds (the first, by file and position,
                           is kept; a broken row never shadows a later valid one)

`docs/data_quality.md` explains each rule and why it runs here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from recopipeline.lib.contract import (
    CART_STATUSES,
    INTERACTION_TYPES,
    MERCHANDISING_RULES,
    PLACEMENTS,
    RULE_ACTIONS,
    SEGMENTS,
    SourceContract,
)

REASONS = (
    "malformed_line",
    "wrong_type",
    "missing_value",
    "value_too_long",
    "unknown_interaction_type",
    "unknown_cart_status",
    "unknown_action",
    "unknown_placement",
    "unknown_customer_segment",
    "negative_price",
    "negative_stock_quantity",
    "negative_line_value",
    "negative_min_price",
    "negative_max_price",
    "non_positive_quantity",
    "non_positive_new_within_days",
    "invalid_rule",
    "future_timestamp",
    "unknown_customer",
    "unknown_product",
    "duplicate_key",
)

ALLOWED_VALUES: dict[str, tuple[str, ...]] = {
    "interaction_type": INTERACTION_TYPES,
    "cart_status": CART_STATUSES,
    "action": RULE_ACTIONS,
    "placement": PLACEMENTS,
    "customer_segment": SEGMENTS,
}
MINIMUMS: dict[str, tuple[float, bool]] = {  # column -> (bound, whether the bound itself is allowed)
    "price": (0, True),
    "stock_quantity": (0, True),
    "line_value": (0, True),
    "min_price": (0, True),
    "max_price": (0, True),
    "quantity": (0, False),
    "new_within_days": (0, False),
}
# What makes a merchandising rule inapplicable, each with what to tell (checked after the column rules).
_RULE_PROBLEMS = (
    ("product_ids IS NULL AND category IS NULL AND brand IS NULL AND min_price IS NULL AND max_price IS NULL "
     "AND new_within_days IS NULL", "'the rule has no condition on products'"),
    ("NOT isfinite(value) OR NOT isfinite(min_price) OR NOT isfinite(max_price)",
     "'value, min_price and max_price must be finite numbers'"),
    ("action = 'boost' AND (value IS NULL OR value <= 1)", "format('a boost needs a value > 1, not {}', value)"),
    ("action = 'bury' AND (value IS NULL OR value <= 0 OR value >= 1)",
     "format('a bury needs a value in (0, 1), not {}', value)"),
    ("action = 'pin' AND (value IS NULL OR value < 1 OR value > 1000 OR value <> trunc(value))",
     "format('a pin needs a whole position from 1 to 1000, not {}', value)"),
    ("action = 'pin' AND (product_ids IS NULL OR contains(product_ids, '|') OR trim(product_ids) = '' "
     "OR category IS NOT NULL OR brand IS NOT NULL OR min_price IS NOT NULL OR max_price IS NOT NULL "
     "OR new_within_days IS NOT NULL)", "'a pin names exactly one product in product_ids and no other condition'"),
    ("valid_to <= valid_from", "format('valid_to {} is not after valid_from {}', valid_to, valid_from)"),
    ("min_price > max_price", "format('min_price {} is above max_price {}', min_price, max_price)"),
)
# Integer types that cast to INTEGER without rounding (a value out of range still fails the cast).
_WHOLE_NUMBER_TYPES = {
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT",
}
# Which reference source an id column must be found in, for the event sources.
REFERENCES: dict[str, str] = {"customer_id": "customers", "product_id": "products"}

QUARANTINE_COLUMNS = (
    "source VARCHAR, reason VARCHAR, detail VARCHAR, raw_row VARCHAR, source_file VARCHAR, source_row BIGINT, "
    "run_id VARCHAR, ingested_at TIMESTAMP, partition_key VARCHAR"
)


@dataclass(frozen=True)
class Rule:
    """One row-level rule: the reason it gives, when a row breaks it (SQL) and what to tell (SQL text)."""

    reason: str
    broken: str
    detail: str


@dataclass(frozen=True)
class Ingest:
    """What one ingest knows besides the rows: when it runs and which reference sources it can look up."""

    now: datetime
    future_tolerance_hours: float
    references: frozenset[str] = frozenset()  # reference sources available as views (customers, products)

    @property
    def latest_allowed(self) -> datetime:
        return self.now + timedelta(hours=self.future_tolerance_hours)


def rules(contract: SourceContract, ingest: Ingest) -> list[Rule]:
    """The row-level rules of a source, in the order they are checked (duplicates come after, by window)."""
    found: list[Rule] = []
    for c in contract.columns:
        if c.type != "VARCHAR":
            found.append(Rule(
                "wrong_type",
                f"{_raw(c.name)} IS NOT NULL AND {c.name} IS NULL",
                f"format('{c.name} {{}} is not a valid {c.type}', {_shown(_raw(c.name))})",
            ))
    for c in contract.columns:
        if not c.nullable:
            blank = f" OR trim({c.name}) = ''" if c.type == "VARCHAR" else ""
            found.append(Rule("missing_value", f"{c.name} IS NULL{blank}", f"'{c.name} is missing'"))
    for c in contract.columns:
        if c.max_length is not None:
            found.append(Rule(
                "value_too_long",
                f"length({c.name}) > {c.max_length}",
                f"format('{c.name} is {{:,}} characters long; the limit is {c.max_length:,}', length({c.name}))",
            ))
    for name, allowed in ALLOWED_VALUES.items():
        if name in contract.column_names:
            listed = ", ".join(allowed)
            found.append(Rule(
                f"unknown_{name}",
                f"{name} NOT IN ({', '.join(_literal(v) for v in allowed)})",
                f"format('{name} {{}} is not one of {listed}', {_shown(name)})",
            ))
    for name, (bound, inclusive) in MINIMUMS.items():
        if name in contract.column_names:
            reason = f"negative_{name}" if inclusive else f"non_positive_{name}"
            found.append(Rule(
                reason,
                f"{name} {'<' if inclusive else '<='} {bound}",
                f"format('{name} {{}} must be {'>=' if inclusive else '>'} {bound}', {name})",
            ))
    if contract.name == MERCHANDISING_RULES.name:
        broken = " OR ".join(f"({condition})" for condition, _ in _RULE_PROBLEMS)
        detail = "CASE " + " ".join(f"WHEN {condition} THEN {text}" for condition, text in _RULE_PROBLEMS) + " END"
        found.append(Rule("invalid_rule", f"coalesce({broken}, false)", detail))
    limit = f"TIMESTAMP '{ingest.latest_allowed:%Y-%m-%d %H:%M:%S}'"
    for c in contract.columns:
        if c.type == "TIMESTAMP" and not c.may_be_future:
            found.append(Rule(
                "future_timestamp",
                f"{c.name} > {limit}",
                f"format('{c.name} {{}} is after the ingest time plus {ingest.future_tolerance_hours:g} h "
                f"({ingest.latest_allowed:%Y-%m-%d %H:%M:%S})', {c.name})",
            ))
    if contract.event_time is not None:
        for column, reference in REFERENCES.items():
            if column in contract.column_names and reference in ingest.references:
                found.append(Rule(
                    f"unknown_{reference.removesuffix('s')}",
                    f"NOT {column}_known",
                    f"format('{column} {{}} is not in {reference}', {_shown(column)})",
                ))
    return found


def typed_columns(contract: SourceContract, raw_types: dict[str, str]) -> list[str]:
    """Each contract column cast to its type (NULL where it does not parse); timestamps end as naive UTC."""
    expressions = []
    for c in contract.columns:
        typed = typed_value(contract, c.name, raw_types)
        expressions.append(c.name if typed == c.name else f"{typed} AS {c.name}")
    return expressions


def typed_value(contract: SourceContract, name: str, raw_types: dict[str, str]) -> str:
    """SQL for one contract column cast to its type (NULL where it does not parse)."""
    c = contract.column(name)
    source_type = raw_types.get(c.name, "VARCHAR").upper()
    if source_type == c.type:
        return c.name
    if c.type == "TIMESTAMP":
        # text with an offset ("...+02:00", "...Z") and TIMESTAMPTZ values are converted to UTC; text without
        # an offset is taken as UTC
        return f"timezone('UTC', TRY_CAST({c.name} AS TIMESTAMPTZ))"
    if c.type == "INTEGER" and source_type not in _WHOLE_NUMBER_TYPES:
        # CAST rounds 30.5 (or '30.5') to 31; only a whole number is an INTEGER
        number = f"TRY_CAST({c.name} AS DOUBLE)"
        return f"CASE WHEN {number} = trunc({number}) THEN TRY_CAST({c.name} AS INTEGER) END"
    return f"TRY_CAST({c.name} AS {c.type})"


def repeated_keys_sql(contract: SourceContract, raw_types: dict[str, str], relation: str) -> str:
    """SELECT the hashes of the keys that more than one row of `relation` holds (valid or not): only their rows
    can be duplicates, so the ranking by file and position needs to see just theirs (a hash that two keys
    share only adds rows to rank)."""
    key = ", ".join(typed_value(contract, k, raw_types) for k in contract.key)
    return f"SELECT hash({key}) AS key_hash FROM {relation} GROUP BY key_hash HAVING count(*) > 1"


def classify_sql(
    contract: SourceContract,
    ingest: Ingest,
    raw_types: dict[str, str],
    relation: str,
    repeated: str | None,
    carried: tuple[str, ...] = (),
) -> str:
    """SELECT _file, _row, reason, detail and raw_row (the values as read, as JSON text) for every row of
    `relation` that breaks a rule (the first rule only), in one scan; `carried` columns of `relation` come along.

    `repeated` (from `repeated_keys_sql`) holds the keys of the possible duplicates; None when there are none.
    """
    found = rules(contract, ingest)
    raw_copies = ", ".join(f"{c} AS {_raw(c)}" for c in contract.column_names)
    known = "".join(
        f",\n           {column} IN (SELECT {column} FROM {reference}) AS {column}_known"
        for column, reference in REFERENCES.items()
        if contract.event_time is not None and column in contract.column_names and reference in ingest.references
    )
    reasons = "\n".join(f"               WHEN {r.broken} THEN '{r.reason}'" for r in found)
    details = "\n".join(f"               WHEN {r.broken} THEN {r.detail}" for r in found)
    key = ", ".join(contract.key)
    shown_key = " || ', ' || ".join(f"{k}::VARCHAR" for k in contract.key)
    raw_row = "to_json({" + ", ".join(f"'{c}': {_raw(c)}" for c in contract.column_names) + "})::VARCHAR"
    extra = "".join(f", {column}" for column in carried)
    may_repeat = f"hash({key}) IN (SELECT key_hash FROM {repeated})" if repeated else "false"
    return f"""
WITH typed AS (
    -- the contract's columns cast to their types, next to the values as read
    SELECT _file, _row{extra}, {raw_copies},
           {", ".join(typed_columns(contract, raw_types))}
    FROM {relation}
),
looked_up AS (
    -- whether the event's customer and product are known (only for event sources), and whether the key repeats
    SELECT *{known},
           {may_repeat} AS may_repeat
    FROM typed
),
checked AS (
    -- the first row-level rule each row breaks, or NULL
    SELECT *,
           CASE
{reasons if found else "               WHEN false THEN NULL"}
           END AS reason,
           CASE
{details if found else "               WHEN false THEN NULL"}
           END AS detail
    FROM looked_up
),
flagged AS (
    -- the rows that break a rule, and those that pass but may be duplicates
    SELECT * FROM checked WHERE reason IS NOT NULL OR may_repeat
),
ranked AS (
    -- among the rows that pass, the first of each key (by file, then position) is kept
    SELECT *,
           CASE WHEN reason IS NULL THEN row_number() OVER first_of_key END AS key_copy,
           CASE WHEN reason IS NULL THEN first_value(_row) OVER first_of_key END AS first_row,
           CASE WHEN reason IS NULL THEN first_value(_file) OVER first_of_key END AS first_file
    FROM flagged
    WINDOW first_of_key AS (PARTITION BY reason IS NULL, {key} ORDER BY _file, _row)
)
SELECT _file,
       _row{extra},
       coalesce(reason, 'duplicate_key') AS reason,
       coalesce(detail, format('key ({{}}) is already held by row {{}} of {{}}', {shown_key}, first_row,
                               parse_filename(first_file))) AS detail,
       {raw_row} AS raw_row
FROM ranked
WHERE reason IS NOT NULL OR key_copy > 1
"""


def accepted_sql(contract: SourceContract, raw_types: dict[str, str], relation: str, rejected: str) -> str:
    """The typed rows of `relation` that are not in `rejected` (matched on file and position)."""
    return f"""
SELECT {", ".join(c.name for c in contract.columns)}
FROM (
    SELECT _file, _row, {", ".join(typed_columns(contract, raw_types))}
    FROM {relation}
) AS typed
ANTI JOIN {rejected} USING (_file, _row)
"""


def quarantine_sql(
    contract: SourceContract,
    rejected: str,
    malformed: str,
    *,
    run_id: str,
    ingested_at: datetime,
    partition_key: str = "NULL",
) -> str:
    """The quarantine rows of one ingest: the rejected rows (from `classify_sql`), then the malformed lines.

    `partition_key` is SQL over a rejected row for its partition key; malformed lines have none.
    """
    stamp = f"{_literal(run_id)} AS run_id, TIMESTAMP '{ingested_at:%Y-%m-%d %H:%M:%S.%f}' AS ingested_at"
    return f"""
SELECT {_literal(contract.name)} AS source, reason, detail, raw_row,
       _file AS source_file, _row AS source_row, {stamp}, ({partition_key})::VARCHAR AS partition_key
FROM {rejected}
UNION ALL
SELECT {_literal(contract.name)}, 'malformed_line', format('line {{}}: {{}}', line, error),
       to_json({{'csv_line': csv_line}})::VARCHAR, _file, NULL::BIGINT, {stamp}, NULL::VARCHAR
FROM {malformed}
"""


def _raw(column: str) -> str:
    return f"{column}__as_read"


def _shown(expression: str) -> str:
    """A value in a detail message: quoted text (its first 80 characters, then '…'), or 'NULL'."""
    text = f"{expression}::VARCHAR"
    shortened = f"CASE WHEN length({text}) > 80 THEN left({text}, 80) || '…' ELSE {text} END"
    return f"coalesce('''' || {shortened} || '''', 'NULL')"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
