"""The contract's value rules, hand-computed: integers that are not whole numbers, text beyond its length limit,
optional catalogue values, time-zone-aware timestamps and numeric ids."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recopipeline.lib.contract import SOURCES
from recopipeline.lib.validation import REASONS
from recopipeline.lib.warehouse import Warehouse
from recopipeline_tests.test_validation import GOOD, HEADERS, failure_messages, ingest, quarantine, write_sources


def products_parquet(**columns) -> pa.Table:
    """Three products P1..P3 as Parquet, with some columns replaced."""
    good = {
        "product_id": ["P1", "P2", "P3"], "product_name": ["Mug", "Plate", "Bowl"], "category": ["kitchen"] * 3,
        "brand": pa.array([None] * 3, pa.string()), "price": [4.5, 3.0, 2.0],
        "stock_quantity": pa.array([10, 0, 5], pa.int32()), "is_active": [True, True, True],
        "created_at": pa.array([datetime(2025, 6, 1)] * 3, pa.timestamp("us")),
    }
    return pa.table({**good, **columns})


def accepted(store: Warehouse, source: str, order_by: str):
    return store.read(f"SELECT * FROM {source} ORDER BY {order_by}", inputs=[source])


# --- whole numbers only -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("stock_type", [pa.decimal128(5, 1), pa.float64()], ids=["decimal", "double"])
def test_a_parquet_number_with_a_fraction_is_not_an_integer(definitions, tmp_path, stock_type):
    folder = write_sources(tmp_path / "input", skip=("products",))
    stock = pa.array([Decimal("10.0"), Decimal("30.5"), Decimal("30.0")], pa.decimal128(5, 1)).cast(stock_type)
    pq.write_table(products_parquet(stock_quantity=stock), folder / "products.parquet")
    store = Warehouse(str(tmp_path / "warehouse"))
    assert ingest(definitions, store, folder, selection=["products"]).success
    held = quarantine(store)
    # 30.5 would be rounded to 31 by a plain cast; 30.0 is a whole number and is 30
    assert held[["reason", "source_row"]].values.tolist() == [["wrong_type", 2]]
    assert "stock_quantity '30.5' is not a valid INTEGER" in held.detail.iloc[0]
    products = accepted(store, "products", "product_id")
    assert products.product_id.tolist() == ["P1", "P3"] and products.stock_quantity.tolist() == [10, 30]


def test_csv_text_with_a_fraction_is_not_an_integer(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", {
        "products": ["P3,Bowl,kitchen,,2.0,30.5,true,2025-06-01", "P4,Jug,kitchen,,2.0,30.0,true,2025-06-01"],
        "orders": ["O2,C1,P1,2026-09-01 10:00:00,1.5,6.75"],
    })
    store = Warehouse(str(tmp_path / "warehouse"))
    assert ingest(definitions, store, folder, selection=["customers", "products", "orders"]).success
    held = quarantine(store)
    assert held[["source", "reason"]].values.tolist() == [["orders", "wrong_type"], ["products", "wrong_type"]]
    assert "quantity '1.5' is not a valid INTEGER" in held.detail.iloc[0]
    assert "stock_quantity '30.5' is not a valid INTEGER" in held.detail.iloc[1]
    stock = accepted(store, "products", "product_id").set_index("product_id").stock_quantity
    assert stock.to_dict() == {"P1": 10, "P2": 0, "P4": 30}
    assert accepted(store, "orders", "order_id").quantity.tolist() == [2]


# --- length limits ----------------------------------------------------------------------------------------------

LIMITED = [(s, c.name, c.max_length) for s, contract in SOURCES.items() for c in contract.columns if c.max_length]


def _with_value(source: str, column: str, value: str) -> str:
    """The first good row of a source with one value replaced."""
    header = HEADERS[source].split(",")
    fields = GOOD[source][0].split(",")
    fields[header.index(column)] = value
    return ",".join(fields)


def test_the_limits_are_those_of_the_contract():
    assert {(s, c): n for s, c, n in LIMITED} == {
        ("customers", "customer_id"): 64, ("customers", "email"): 254, ("customers", "country"): 100,
        ("products", "product_id"): 64, ("products", "product_name"): 200, ("products", "category"): 100,
        ("products", "brand"): 100,
        ("orders", "order_id"): 64, ("orders", "customer_id"): 64, ("orders", "product_id"): 64,
        ("customer_interactions", "event_id"): 64, ("customer_interactions", "customer_id"): 64,
        ("customer_interactions", "product_id"): 64, ("customer_interactions", "session_id"): 128,
        ("cart_activity", "cart_id"): 64, ("cart_activity", "customer_id"): 64,
        ("cart_activity", "product_id"): 64,
        ("merchandising_rules", "rule_id"): 64, ("merchandising_rules", "product_ids"): 4000,
        ("merchandising_rules", "category"): 100, ("merchandising_rules", "brand"): 100,
    }
    assert REASONS.index("missing_value") < REASONS.index("value_too_long") < REASONS.index("unknown_customer")


def test_every_value_beyond_its_limit_is_quarantined(definitions, tmp_path):
    extra: dict[str, list[str]] = {}
    for source, column, limit in LIMITED:
        extra.setdefault(source, []).append(_with_value(source, column, "x" * (limit + 1)))
    folder = write_sources(tmp_path / "input", extra)
    store = Warehouse(str(tmp_path / "warehouse"))
    assert ingest(definitions, store, folder).success
    held = quarantine(store)
    assert set(held.reason) == {"value_too_long"}
    found = sorted((row.source, row.detail) for row in held.itertuples())
    assert found == sorted(
        (source, f"{column} is {limit + 1:,} characters long; the limit is {limit:,}") for source, column, limit in LIMITED
    )
    for source in SOURCES:  # only the long rows were held
        assert len(accepted(store, source, SOURCES[source].key[0])) == len(GOOD[source])


def test_a_name_up_to_its_limit_is_served_and_a_longer_one_is_not(definitions, tmp_path):
    names = {"P3": "n" * 200, "P4": "é" * 200, "P5": "n" * 201, "P6": "n" * 1024 * 1024}
    folder = write_sources(tmp_path / "input", {
        "products": [f"{p},{name},kitchen,,1.0,5,true,2025-06-01" for p, name in names.items()]})
    store = Warehouse(str(tmp_path / "warehouse"))
    assert ingest(definitions, store, folder, selection=["products"]).success
    held = quarantine(store)
    assert held.reason.tolist() == ["value_too_long"] * 2
    # characters, not bytes (200 x 'é' is 400 bytes); the detail never repeats a long value
    assert held.detail.tolist() == ["product_name is 201 characters long; the limit is 200",
                                    "product_name is 1,048,576 characters long; the limit is 200"]
    assert accepted(store, "products", "product_id").product_id.tolist() == ["P1", "P2", "P3", "P4"]


def test_a_long_wrong_value_is_shortened_in_the_detail(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", {"products": ["P3,Bowl,kitchen,,1.0," + "9" * 5000 + ",true,2025-06-01"]})
    store = Warehouse(str(tmp_path / "warehouse"))
    assert ingest(definitions, store, folder, selection=["products"]).success
    (detail,) = quarantine(store).detail
    assert detail == f"stock_quantity '{'9' * 80}…' is not a valid INTEGER"


# --- what a catalogue may lack ----------------------------------------------------------------------------------

def test_a_catalogue_may_lack_names_prices_stock_and_listing_dates(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", {"products": ["P3,,kitchen,,,,true,"]})
    store = Warehouse(str(tmp_path / "warehouse"))
    assert ingest(definitions, store, folder, selection=["products"]).success
    assert len(quarantine(store)) == 0
    p3 = accepted(store, "products", "product_id").set_index("product_id").loc["P3"]
    assert p3[["product_name", "brand", "price", "stock_quantity", "created_at"]].isna().all()
    assert p3.category == "kitchen" and p3.is_active


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_catalogue_file_may_leave_the_optional_columns_out(definitions, tmp_path, kind):
    folder = write_sources(tmp_path / "input", skip=("products",))
    required = pa.table({"product_id": ["P1", "P2"], "category": ["kitchen"] * 2, "is_active": [True, False]})
    if kind == "csv":
        (folder / "products.csv").write_text("product_id,category,is_active\nP1,kitchen,true\nP2,kitchen,false\n")
    else:
        pq.write_table(required, folder / "products.parquet")
    store = Warehouse(str(tmp_path / "warehouse"))
    result = ingest(definitions, store, folder, selection=["products"])
    assert result.success, failure_messages(result)
    products = accepted(store, "products", "product_id")
    assert products.columns.tolist() == SOURCES["products"].column_names + ["product_key"]
    assert products.product_id.tolist() == ["P1", "P2"] and products.is_active.tolist() == [True, False]
    assert products[["product_name", "brand", "price", "stock_quantity", "created_at"]].isna().all().all()


def test_category_and_is_active_stay_required(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", {"products": ["P3,Bowl,,,1.0,5,true,", "P4,Jug,kitchen,,1.0,5,,"]})
    store = Warehouse(str(tmp_path / "warehouse"))
    assert ingest(definitions, store, folder, selection=["products"]).success
    assert quarantine(store).detail.tolist() == ["category is missing", "is_active is missing"]


# --- time zones and numeric ids as they come ---------------------------------------------------------------------

def test_parquet_timestamps_with_a_time_zone_become_naive_utc(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", skip=("customers", "products", "orders"))
    berlin = pa.timestamp("us", tz="Europe/Berlin")  # stored as UTC instants; shown in Berlin time
    pq.write_table(pa.table({
        "customer_id": ["C1", "C2"], "email": pa.array([None, None], pa.string()),
        "signup_date": pa.array([datetime(2026, 1, 1, 9), datetime(2026, 7, 1, 8)], pa.timestamp("us", tz="UTC"))
        .cast(berlin),
        "country": ["GB", "DE"],
    }), folder / "customers.parquet")
    created = pa.array([datetime(2025, 6, 1, 12)] * 3, pa.timestamp("us", tz="UTC")).cast(
        pa.timestamp("ms", tz="America/New_York"))
    pq.write_table(products_parquet(created_at=created), folder / "products.parquet")
    pq.write_table(pa.table({
        "order_id": ["O1"], "customer_id": ["C1"], "product_id": ["P1"],
        "order_timestamp": pa.array([datetime(2026, 9, 1, 10)], pa.timestamp("us", tz="UTC")).cast(berlin),
        "quantity": pa.array([2], pa.int32()), "line_value": [9.0],
    }), folder / "orders.parquet")
    store = Warehouse(str(tmp_path / "warehouse"))
    result = ingest(definitions, store, folder, selection=["customers", "products", "orders"])
    assert result.success, failure_messages(result)
    assert len(quarantine(store)) == 0
    customers = accepted(store, "customers", "customer_id")
    assert customers.signup_date.astype(str).tolist() == ["2026-01-01 09:00:00", "2026-07-01 08:00:00"]
    assert str(customers.signup_date.dtype).startswith("datetime64")  # naive, no time zone left
    assert accepted(store, "products", "product_id").created_at.astype(str).tolist() == ["2025-06-01 12:00:00"] * 3
    assert accepted(store, "orders", "order_id").order_timestamp.astype(str).tolist() == ["2026-09-01 10:00:00"]


def test_numeric_ids_in_parquet_are_read_as_text(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", skip=("customers", "products", "orders"))
    pq.write_table(pa.table({
        "customer_id": pa.array([1, 2], pa.int64()), "email": pa.array([None, None], pa.string()),
        "signup_date": pa.array([datetime(2026, 1, 1)] * 2, pa.timestamp("us")), "country": ["GB", "FR"],
    }), folder / "customers.parquet")
    pq.write_table(products_parquet(product_id=pa.array([10, 20, 30], pa.int32())), folder / "products.parquet")
    pq.write_table(pa.table({
        "order_id": pa.array([100, 100, 101], pa.int64()), "customer_id": pa.array([1, 1, 3], pa.int64()),
        "product_id": pa.array([10, 20, 10], pa.int64()),
        "order_timestamp": pa.array([datetime(2026, 9, 1, 10)] * 3, pa.timestamp("us")),
        "quantity": pa.array([1, 1, 1], pa.int32()), "line_value": [4.5, 3.0, 4.5],
    }), folder / "orders.parquet")
    store = Warehouse(str(tmp_path / "warehouse"))
    result = ingest(definitions, store, folder, selection=["customers", "products", "orders"])
    assert result.success, failure_messages(result)
    assert accepted(store, "customers", "customer_id").customer_id.tolist() == ["1", "2"]
    assert accepted(store, "products", "product_id").product_id.tolist() == ["10", "20", "30"]
    orders = accepted(store, "orders", "order_id, product_id")
    assert orders[["order_id", "customer_id", "product_id"]].values.tolist() == [["100", "1", "10"], ["100", "1", "20"]]
    held = quarantine(store)
    assert held[["reason", "detail"]].values.tolist() == [["unknown_customer", "customer_id '3' is not in customers"]]
