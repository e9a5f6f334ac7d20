"""Tests of the UCI Online Retail adapter on a hand-written raw file and on the bundled sample."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recopipeline.lib.contract import REQUIRED_SOURCES, SOURCES, arrow_schema
from recopipeline.lib.online_retail import (
    DROP_REASONS,
    ONLINE_RETAIL_II_NAMES,
    REJECTED_FILE,
    SAMPLE_PATH,
    convert_online_retail,
)

ONLINE_RETAIL_II_NAMES_BY_CLASSIC = {classic: ii for ii, classic in ONLINE_RETAIL_II_NAMES.items()}

RAW_SCHEMA = pa.schema(
    [
        ("InvoiceNo", pa.string()),
        ("StockCode", pa.string()),
        ("Description", pa.string()),
        ("Quantity", pa.int64()),
        ("InvoiceDate", pa.string()),
        ("UnitPrice", pa.float64()),
        ("CustomerID", pa.float64()),
        ("Country", pa.string()),
    ]
)

UK, FR = "United Kingdom", "France"
HEART, HEART_ALT = "WHITE HANGING HEART T-LIGHT HOLDER", "WHITE HANGING HEART T LIGHT HOLDER"

# One row per quirk; the comment is the expected reason (or "kept").
RAW_ROWS = [
    ("536365", "85123A", HEART, 6, "2010-12-01 08:26:00", 2.55, 17850.0, UK),  # kept
    ("536365", "71053", "WHITE METAL LANTERN", 6, "2010-12-01 08:26:00", 3.39, 17850.0, UK),  # kept
    ("536365", "71053", "WHITE METAL LANTERN ", 2, "2010-12-01 08:27:00", 3.39, 17850.0, UK),  # kept, same line
    ("536365", "85123A", HEART, 6, "2010-12-01 08:26:00", 2.55, 17850.0, UK),  # duplicate of row 0
    ("C536379", "22423", "REGENCY CAKESTAND 3 TIER", -1, "2010-12-01 09:41:00", 12.75, 17850.0, UK),  # cancelled
    ("536380", "22423", "REGENCY CAKESTAND 3 TIER", 2, "2010-12-02 09:00:00", 12.75, None, UK),  # missing customer
    ("536381", "POST", "POSTAGE", 1, "2010-12-02 10:00:00", 18.0, 12583.0, FR),  # non_product
    ("536382", "22139", "RETROSPOT TEA SET CERAMIC 11 PC", -3, "2010-12-02 11:00:00", 0.0, 12583.0, FR),  # qty
    ("536383", "22139", "RETROSPOT TEA SET CERAMIC 11 PC", 1, "2010-12-02 12:00:00", 0.0, 12583.0, FR),  # price
    ("536384", " 85123a ", f" {HEART_ALT}", 4, "2010-12-03 11:00:00", 2.95, 12583.0, FR),  # kept as 85123A
    ("A563185", "B", "Adjust bad debt", 1, "2011-08-12 14:50:00", 11062.06, None, UK),  # adjustment
    ("536384", "gift_0001_20", "Dotcomgiftshop Gift Voucher £20.00", 1, "2010-12-03 11:00:00", 17.02, 12583.0, FR),
]

EXPECTED_DROPPED = {
    "cancelled": 1,
    "adjustment": 1,
    "missing_customer": 1,
    "non_product": 2,
    "non_positive_quantity": 1,
    "non_positive_price": 1,
    "duplicate": 1,
}


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _rows(path: Path) -> list[tuple]:
    return [tuple(row.values()) for row in pq.read_table(path).to_pylist()]


@pytest.fixture
def raw_file(tmp_path: Path) -> Path:
    frame = pd.DataFrame(RAW_ROWS, columns=RAW_SCHEMA.names)
    path = tmp_path / "raw.parquet"
    pq.write_table(pa.Table.from_pandas(frame, schema=RAW_SCHEMA, preserve_index=False), path)
    return path


@pytest.fixture
def converted(raw_file: Path, tmp_path: Path):
    out = tmp_path / "out"
    return out, convert_online_retail(raw_file, out)


def test_counts_by_reason(converted):
    _, report = converted
    assert report.input_rows == len(RAW_ROWS)
    assert report.kept_lines == 4
    assert report.dropped == EXPECTED_DROPPED
    assert report.input_rows == report.kept_lines + sum(report.dropped.values())
    assert report.rows_written == {
        "customers": 2,
        "products": 2,
        "orders": 3,
        "customer_interactions": 3,
        "cart_activity": 0,
    }


def test_orders(converted):
    out, _ = converted
    first = _ts("2010-12-01 08:26:00")  # the invoice's first time, also for the 08:27 line
    assert _rows(out / "orders.parquet") == [
        ("536365", "17850", "71053", first, 8, 27.12),
        ("536365", "17850", "85123A", first, 6, 15.3),
        ("536384", "12583", "85123A", _ts("2010-12-03 11:00:00"), 4, 11.8),
    ]


def test_interactions(converted):
    out, _ = converted
    first = _ts("2010-12-01 08:26:00")
    assert _rows(out / "customer_interactions.parquet") == [
        ("536365:71053", "17850", "71053", "purchase", first, "536365"),
        ("536365:85123A", "17850", "85123A", "purchase", first, "536365"),
        ("536384:85123A", "12583", "85123A", "purchase", _ts("2010-12-03 11:00:00"), "536384"),
    ]


def test_customers_and_products(converted):
    out, _ = converted
    assert _rows(out / "customers.parquet") == [
        ("12583", None, _ts("2010-12-03 11:00:00"), FR),
        ("17850", None, _ts("2010-12-01 08:26:00"), UK),
    ]
    # 85123A has two names once each: the tie goes to the alphabetically first.
    assert _rows(out / "products.parquet") == [
        ("71053", "WHITE METAL LANTERN", "cat_710", None, 3.39, None, True, _ts("2010-12-01 08:26:00")),
        ("85123A", HEART_ALT, "cat_851", None, 2.75, None, True, _ts("2010-12-01 08:26:00")),
    ]


def test_rejected_rows_keep_raw_values(converted):
    out, _ = converted
    rejected = pq.read_table(out / REJECTED_FILE)
    assert rejected.column_names == [*RAW_SCHEMA.names, "source_row", "reason"]
    assert rejected.column("source_row").to_pylist() == [3, 4, 5, 6, 7, 8, 10, 11]
    assert rejected.column("reason").to_pylist() == [
        "duplicate",
        "cancelled",
        "missing_customer",
        "non_product",
        "non_positive_quantity",
        "non_positive_price",
        "adjustment",
        "non_product",
    ]
    assert tuple(rejected.slice(1, 1).select(RAW_SCHEMA.names).to_pylist()[0].values()) == RAW_ROWS[4]


def test_schemas_match_contract(converted):
    out, _ = converted
    for name in REQUIRED_SOURCES:
        contract = SOURCES[name]
        assert pq.read_schema(out / f"{name}.parquet").equals(arrow_schema(contract.name)), name


def test_period_and_customer_slices(raw_file: Path, tmp_path: Path):
    report = convert_online_retail(raw_file, tmp_path / "period", start="2010-12-01", end="2010-12-02")
    assert report.input_rows == 5  # rows 0-4
    assert report.rows_written["orders"] == 2

    first = min(("17850", "12583"), key=lambda c: hashlib.md5(c.encode()).hexdigest())
    report = convert_online_retail(raw_file, tmp_path / "one", max_customers=1)
    customers = _rows(tmp_path / "one" / "customers.parquet")
    assert [c[0] for c in customers] == [first]
    assert report.dropped["missing_customer"] == 0


def test_bundled_sample(tmp_path: Path):
    report = convert_online_retail(SAMPLE_PATH, tmp_path)
    assert set(report.dropped) == set(DROP_REASONS)
    assert report.input_rows == pq.ParquetFile(SAMPLE_PATH).metadata.num_rows
    assert report.input_rows == report.kept_lines + sum(report.dropped.values())
    assert pq.ParquetFile(tmp_path / REJECTED_FILE).metadata.num_rows == sum(report.dropped.values())
    assert min(report.rows_written[n] for n in ("customers", "products", "orders")) > 1000
    con = duckdb.connect()
    for name in REQUIRED_SOURCES:
        contract = SOURCES[name]
        path = tmp_path / f"{name}.parquet"
        assert pq.read_schema(path).equals(arrow_schema(contract.name)), name
        key = ", ".join(contract.key)
        sql = f"SELECT count(*), count(DISTINCT ({key})) FROM read_parquet(?)"
        rows, keys = con.execute(sql, [str(path)]).fetchall()[0]
        assert rows == keys == report.rows_written[name], name
    con.close()


def test_online_retail_ii_column_names_give_the_same_sources(raw_file: Path, converted, tmp_path: Path):
    """Online Retail II calls three columns Invoice, Price and "Customer ID"; the conversion is the same."""
    renamed = pq.read_table(raw_file).rename_columns(
        [ONLINE_RETAIL_II_NAMES_BY_CLASSIC.get(name, name) for name in RAW_SCHEMA.names]
    )
    ii_file = tmp_path / "online_retail_ii.parquet"
    pq.write_table(renamed, ii_file)
    out, report = converted
    ii_report = convert_online_retail(ii_file, tmp_path / "ii")
    assert ii_report.dropped == report.dropped and ii_report.rows_written == report.rows_written
    for name in (*REQUIRED_SOURCES, REJECTED_FILE.removesuffix(".parquet")):
        assert _rows(tmp_path / "ii" / f"{name}.parquet") == _rows(out / f"{name}.parquet"), name
