"""Adapter from the UCI "Online Retail" data set to the pipeline's data contract.

The UCI file (dataset 352, CC BY 4.0, https://archive.ics.uci.edu/dataset/352/online+retail) holds the
invoice lines of a UK gift-ware retailer from 2010-12-01 to 2011-12-09; Online Retail II (dataset 502) holds the
same shop from 2009-12-01, with three columns named differently (`ONLINE_RETAIL_II_NAMES`), and is read the same
way. `convert_online_retail` maps either to the five contract sources with DuckDB SQL:

- orders: valid invoice lines, one row per (invoice, product), quantities and values summed.
- customer_interactions: one `purchase` event per order line (the data has no browse events).
- customers: every customer with at least one order line.
- products: every product with at least one order line.
- cart_activity: empty (the data has no carts).

Every raw row that is not turned into an order line is written, with its reason, to
`_rejected_online_retail.parquet`. The reasons are checked in the order of `DROP_REASONS` and a row gets the
first one that applies, so `input_rows == kept_lines + sum(dropped.values())`.

Mapping choices, because the data does not carry them:

- category = "cat_" + the first three digits of the StockCode (e.g. 85123A -> cat_851). The retailer numbers
  its products in blocks, so a block of 100 codes holds a product line or products introduced together
  (e.g. 901xx jewellery, 849xx cushion covers and towels). The rule does not depend on the other rows, so a
  product keeps its category in every slice. Codes without three leading digits get "cat_other".
- brand, email and stock_quantity are NULL (unknown; an unknown stock counts as in stock); is_active is true
  (every product in the table has a valid sale); created_at is the product's first sale.
- Timestamps are InvoiceDate as written (UK local time, at most one hour from UTC in summer). All lines of an
  invoice get the invoice's first time, because 43 invoices span a change of minute.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from recopipeline.lib.contract import SOURCES, SourceContract, arrow_schema

SAMPLE_PATH = Path(__file__).parents[1] / "data" / "online_retail" / "online_retail_sample.parquet"
REJECTED_FILE = "_rejected_online_retail.parquet"

# In the order they are checked; a row is counted under the first reason that applies.
DROP_REASONS = (
    "cancelled",  # InvoiceNo starts with C
    "adjustment",  # InvoiceNo starts with A (bad-debt adjustments)
    "missing_customer",  # CustomerID is NULL
    "non_product",  # postage, fees, discounts, vouchers and other codes that are not products
    "non_positive_quantity",  # Quantity <= 0
    "non_positive_price",  # UnitPrice <= 0
    "duplicate",  # exact copy of an earlier row of the file
)

RAW_COLUMNS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country")
# Online Retail II (2009-2011) names three columns differently; its lines are read under the names above.
ONLINE_RETAIL_II_NAMES = {"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"}

@dataclass
class AdapterReport:
    """What a conversion read, kept, dropped (by reason) and wrote (rows per source)."""

    input_rows: int
    kept_lines: int
    dropped: dict[str, int] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)


# The customers of a slice: the n customers with the smallest md5 of their id, which is deterministic and
# spread over the whole customer base. The hash is taken of the id as the contract writes it ("17850").
_SELECTED_CUSTOMERS_CTE = """
selected_customers AS (
    SELECT CustomerID
    FROM candidate_rows
    WHERE CustomerID IS NOT NULL
    GROUP BY CustomerID
    ORDER BY md5(CAST(CAST(CustomerID AS BIGINT) AS VARCHAR)), CustomerID
    LIMIT $max_customers
)"""

SLICE_SQL = f"""
CREATE TEMP TABLE raw_slice AS
WITH source_rows AS (
    SELECT * EXCLUDE (file_row_number), file_row_number AS source_row
    FROM raw_file
),
candidate_rows AS (
    SELECT *
    FROM source_rows
    WHERE ($start IS NULL OR CAST(InvoiceDate AS TIMESTAMP) >= CAST($start AS TIMESTAMP))
      AND ($end IS NULL OR CAST(InvoiceDate AS TIMESTAMP) < CAST($end AS TIMESTAMP))
),
{_SELECTED_CUSTOMERS_CTE}
SELECT *
FROM candidate_rows
WHERE $max_customers IS NULL OR CustomerID IN (SELECT CustomerID FROM selected_customers)
"""

CLASSIFY_SQL = """
CREATE TEMP TABLE classified AS
WITH normalised AS (
    SELECT *,
           upper(trim(StockCode)) AS product_code,
           row_number() OVER (
               PARTITION BY InvoiceNo, StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country
               ORDER BY source_row
           ) AS copy_number
    FROM raw_slice
)
SELECT *,
       CASE
           WHEN InvoiceNo LIKE 'C%' THEN 'cancelled'
           WHEN InvoiceNo LIKE 'A%' THEN 'adjustment'
           WHEN CustomerID IS NULL THEN 'missing_customer'
           WHEN coalesce(product_code, '') IN ('', 'POST', 'DOT', 'C2', 'M', 'D', 'S', 'BANK CHARGES',
                                               'AMAZONFEE', 'CRUK', 'PADS', 'B')
             OR starts_with(product_code, 'GIFT_0001_')
             OR starts_with(product_code, 'DCGS') THEN 'non_product'
           WHEN coalesce(Quantity, 0) <= 0 THEN 'non_positive_quantity'
           WHEN coalesce(UnitPrice, 0) <= 0 THEN 'non_positive_price'
           WHEN copy_number > 1 THEN 'duplicate'
       END AS reason
FROM normalised
"""

KEPT_LINES_SQL = """
CREATE TEMP TABLE kept_lines AS
WITH kept AS (
    SELECT * FROM classified WHERE reason IS NULL
),
typed AS (
    SELECT InvoiceNo AS order_id,
           CAST(CAST(CustomerID AS BIGINT) AS VARCHAR) AS customer_id,
           product_code AS product_id,
           CAST(InvoiceDate AS TIMESTAMP) AS line_timestamp,
           Quantity AS quantity,
           UnitPrice AS unit_price,
           nullif(trim(Description), '') AS description,
           Country AS country
    FROM kept
)
SELECT *, min(line_timestamp) OVER (PARTITION BY order_id) AS order_timestamp
FROM typed
"""

ORDERS_SQL = """
SELECT order_id,
       customer_id,
       product_id,
       order_timestamp,
       sum(quantity) AS quantity,
       round(sum(quantity * unit_price), 2) AS line_value
FROM kept_lines
GROUP BY order_id, customer_id, product_id, order_timestamp
ORDER BY order_timestamp, order_id, product_id
"""

INTERACTIONS_SQL = """
WITH order_lines AS (
    SELECT DISTINCT order_id, customer_id, product_id, order_timestamp FROM kept_lines
)
SELECT order_id || ':' || product_id AS event_id,
       customer_id,
       product_id,
       'purchase' AS interaction_type,
       order_timestamp AS interaction_timestamp,
       order_id AS session_id
FROM order_lines
ORDER BY interaction_timestamp, event_id
"""

CUSTOMERS_SQL = """
WITH country_counts AS (
    SELECT customer_id, country, count(*) AS lines
    FROM kept_lines
    GROUP BY customer_id, country
),
main_country AS (
    SELECT customer_id, country
    FROM country_counts
    QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY lines DESC, country) = 1
),
first_order AS (
    SELECT customer_id, min(order_timestamp) AS signup_date
    FROM kept_lines
    GROUP BY customer_id
)
SELECT f.customer_id,
       NULL AS email,
       f.signup_date,
       m.country
FROM first_order AS f
JOIN main_country AS m USING (customer_id)
ORDER BY f.customer_id
"""

PRODUCTS_SQL = """
WITH description_counts AS (
    SELECT product_id, description, count(*) AS lines
    FROM kept_lines
    WHERE description IS NOT NULL
    GROUP BY product_id, description
),
main_description AS (
    SELECT product_id, description
    FROM description_counts
    QUALIFY row_number() OVER (PARTITION BY product_id ORDER BY lines DESC, description) = 1
),
sales AS (
    SELECT product_id,
           round(median(unit_price), 2) AS price,
           min(order_timestamp) AS created_at
    FROM kept_lines
    GROUP BY product_id
)
SELECT s.product_id,
       coalesce(d.description, s.product_id) AS product_name,
       CASE WHEN regexp_matches(s.product_id, '^[0-9]{3}') THEN 'cat_' || left(s.product_id, 3)
            ELSE 'cat_other' END AS category,
       NULL AS brand,
       s.price,
       NULL::INTEGER AS stock_quantity,
       true AS is_active,
       s.created_at
FROM sales AS s
LEFT JOIN main_description AS d USING (product_id)
ORDER BY s.product_id
"""

SOURCE_SQL: dict[str, str | None] = {
    "customers": CUSTOMERS_SQL,
    "products": PRODUCTS_SQL,
    "orders": ORDERS_SQL,
    "customer_interactions": INTERACTIONS_SQL,
    "cart_activity": None,  # the data has no carts: an empty file with the contract's schema
}

REJECTED_SQL = f"""
SELECT {", ".join(RAW_COLUMNS)}, source_row, reason
FROM classified
WHERE reason IS NOT NULL
ORDER BY source_row
"""

SAMPLE_ROWS_SQL = f"""
WITH candidate_rows AS (
    SELECT * EXCLUDE (file_row_number), file_row_number AS source_row
    FROM read_parquet($src, file_row_number = true)
),
{_SELECTED_CUSTOMERS_CTE},
customer_rows AS (
    SELECT source_row FROM candidate_rows
    WHERE CustomerID IN (SELECT CustomerID FROM selected_customers)
),
anonymous_rows AS (
    SELECT source_row FROM candidate_rows
    WHERE CustomerID IS NULL AND md5_number(InvoiceNo) % 100 < $missing_customer_percent
)
SELECT source_row FROM customer_rows
UNION ALL
SELECT source_row FROM anonymous_rows
ORDER BY source_row
"""


def convert_online_retail(
    src: str | Path,
    out_dir: str | Path,
    *,
    start: str | None = None,
    end: str | None = None,
    max_customers: int | None = None,
) -> AdapterReport:
    """Convert the raw UCI file `src` into the five contract sources as `out_dir/<source>.parquet`.

    `start` (inclusive) and `end` (exclusive) are ISO dates or times that bound InvoiceDate; `max_customers`
    keeps the rows of the N customers with the smallest md5 of their id (rows without a customer then drop
    out). Rows outside the slice are ignored, not counted as dropped: `input_rows` counts the slice.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    try:
        _create_raw_file_view(con, src)
        params = {"start": start, "end": end, "max_customers": max_customers}
        con.execute(SLICE_SQL, params)
        con.execute(CLASSIFY_SQL)
        con.execute(KEPT_LINES_SQL)
        rows_written = {
            name: _write_source(con, SOURCES[name], sql, out / f"{name}.parquet") for name, sql in SOURCE_SQL.items()
        }
        _write_parquet(con.sql(REJECTED_SQL).to_arrow_table(), out / REJECTED_FILE)
        return _report(con, rows_written)
    finally:
        con.close()


def _create_raw_file_view(con: duckdb.DuckDBPyConnection, src: str | Path) -> None:
    """`raw_file`: the UCI file's lines under the Online Retail column names, with their row number."""
    scan = f"read_parquet('{str(src).replace(chr(39), chr(39) * 2)}', file_row_number = true)"
    present = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()]
    columns = [f'"{name}" AS {ONLINE_RETAIL_II_NAMES.get(name, name)}' for name in present]
    con.execute(f"CREATE OR REPLACE TEMP VIEW raw_file AS SELECT {', '.join(columns)} FROM {scan}")


def make_sample(
    src: str | Path,
    dst: str | Path,
    n_customers: int,
    *,
    missing_customer_percent: int = 10,
) -> int:
    """Write a slice of the raw UCI file: unmodified rows, original columns and row order, ZSTD-compressed.

    The slice holds every row (cancellations included) of the `n_customers` customers with the smallest md5
    of their id, plus the rows without a CustomerID of the invoices whose md5_number(InvoiceNo) % 100 is below
    `missing_customer_percent`. Returns the number of rows written.
    """
    con = duckdb.connect()
    try:
        params = {"src": str(src), "max_customers": n_customers, "missing_customer_percent": missing_customer_percent}
        rows = [r[0] for r in con.execute(SAMPLE_ROWS_SQL, params).fetchall()]
    finally:
        con.close()
    raw = pq.read_table(src)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    sample = raw.take(pa.array(rows, pa.int64())).replace_schema_metadata(None)
    _write_parquet(sample, Path(dst))
    return sample.num_rows


def _write_source(con: duckdb.DuckDBPyConnection, contract: SourceContract, sql: str | None, path: Path) -> int:
    """Write one source with exactly the contract's columns and types; return its row count."""
    schema = arrow_schema(contract.name)
    if sql is None:
        table = schema.empty_table()
    else:
        projection = ", ".join(f"CAST({c.name} AS {c.type}) AS {c.name}" for c in contract.columns)
        table = con.sql(f"SELECT {projection} FROM ({sql})").to_arrow_table()
        _check_not_null(contract, table)
        table = table.cast(schema)
    _write_parquet(table, path)
    return table.num_rows


def _check_not_null(contract: SourceContract, table: pa.Table) -> None:
    for column in contract.columns:
        if not column.nullable and table.column(column.name).null_count:
            raise ValueError(f"{contract.name}.{column.name} has NULLs but the contract forbids them")


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Write `table` to a temporary name beside `path`, then move it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def _report(con: duckdb.DuckDBPyConnection, rows_written: dict[str, int]) -> AdapterReport:
    counts = dict(con.execute("SELECT coalesce(reason, 'kept'), count(*) FROM classified GROUP BY ALL").fetchall())
    dropped = {reason: counts.get(reason, 0) for reason in DROP_REASONS}
    (input_rows,) = con.execute("SELECT count(*) FROM raw_slice").fetchall()[0]
    return AdapterReport(
        input_rows=input_rows,
        kept_lines=counts.get("kept", 0),
        dropped=dropped,
        rows_written=rows_written,
    )
