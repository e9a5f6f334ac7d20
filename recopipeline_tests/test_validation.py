"""Bad input through the source assets: every row is accepted or quarantined with its reason, counts add up,
and files that cannot be read fail with one clear line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recopipeline.defs.partitions import first_hour, range_tags
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.sources import SourceError
from recopipeline.lib.warehouse import Warehouse
from recopipeline.runner import source_range_tags
from recopipeline_tests.conftest import materialize_assets, resources_for

HEADERS = {name: ",".join(contract.column_names) for name, contract in SOURCES.items()}
GOOD = {
    "customers": ["C1,c1@example.com,2026-01-01,GB", "C2,,2026-02-01 08:30:00,FR"],
    "products": [
        "P1,Mug,kitchen,Acme,4.5,10,true,2025-06-01",
        "P2,Plate,kitchen,,3.0,0,false,2025-06-01T10:00:00",
    ],
    "orders": ["O1,C1,P1,2026-09-01 10:00:00,2,9.0"],
    "customer_interactions": [
        "E1,C1,P1,view,2026-09-01 09:00:00,S1",
        "E2,C1,P1,purchase,2026-09-01 10:00:00,S1",
    ],
    "cart_activity": ["K1,C1,P1,2026-09-01 09:30:00,checked_out"],
    "merchandising_rules": ["R1,boost,home,,P1,,,,,,1.5,2026-01-01,2027-01-01,1"],
}
# One bad row per kind of bad input: (source, line, reason, words of the detail, the id that marks the row)
BAD_ROWS = [
    ("customer_interactions", "E3,C1,P1,view,2026-09-01 09:00:00,S1,surplus", "malformed_line", "TOO MANY COLUMNS",
     "E3"),
    ("products", "P3,Bowl,kitchen,Acme,cheap,5,true,2025-06-01", "wrong_type", "price 'cheap'", "P3"),
    ("customers", ",nobody@example.com,2026-01-01,GB", "missing_value", "customer_id is missing", "nobody@"),
    ("customer_interactions", "E4,C1,P1,hover,2026-09-01 09:00:00,S1", "unknown_interaction_type", "'hover'", "E4"),
    ("products", "P4,Jug,kitchen,Acme,-2.5,5,true,2025-06-01", "negative_price", "price -2.5", "P4"),
    ("customer_interactions", "E5,C1,P1,view,2099-01-01 00:00:00,S1", "future_timestamp", "2099-01-01", "E5"),
    ("customer_interactions", "E1,C2,P1,click,2026-09-02 09:00:00,S9", "duplicate_key", "row 1", "S9"),
    ("customer_interactions", "E6,C1,P99,view,2026-09-01 09:00:00,S1", "unknown_product", "'P99'", "P99"),
    ("orders", "O2,C99,P1,2026-09-01 10:00:00,1,4.5", "unknown_customer", "'C99'", "C99"),
    ("orders", "O3,C1,P1,2026-09-01 10:00:00,0,0", "non_positive_quantity", "quantity 0", "O3"),
    ("cart_activity", "K2,C1,P1,2026-09-01 09:30:00,lost", "unknown_cart_status", "'lost'", "K2"),
]


def write_sources(folder: Path, extra: dict[str, list[str]] | None = None, skip: tuple[str, ...] = ()) -> Path:
    """Hand-written CSV files: the good rows, then any extra lines per source."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        if name not in skip:
            lines = [HEADERS[name], *GOOD[name], *(extra or {}).get(name, [])]
            (folder / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return folder


def ingest(definitions, store: Warehouse, folder: Path, selection=tuple(SOURCES), **tuning):
    return materialize_assets(
        list(definitions.assets),
        selection=list(selection),
        resources=resources_for(store, source=str(folder), **{"max_quarantine_share": 1.0, **tuning}),
        raise_on_error=False,
    )


def failure_messages(result) -> list[str]:
    return [e.event_specific_data.error.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"]


def quarantine(store: Warehouse):
    return store.read("SELECT * FROM quarantine ORDER BY source, source_file, source_row", inputs=["quarantine"])


@pytest.fixture(scope="module")
def bad_run(definitions, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    extra: dict[str, list[str]] = {}
    for source, line, *_ in BAD_ROWS:
        extra.setdefault(source, []).append(line)
    folder = write_sources(root / "input", extra)
    store = Warehouse(str(root / "warehouse"), memory_limit="1GB", threads=2)
    result = ingest(definitions, store, folder)
    assert result.success, failure_messages(result)
    return store, result, extra


@pytest.mark.parametrize(("source", "line", "reason", "detail", "marker"), BAD_ROWS, ids=[r[2] for r in BAD_ROWS])
def test_each_bad_row_is_quarantined_with_its_reason(bad_run, source, line, reason, detail, marker):
    store, _, _ = bad_run
    held = quarantine(store)
    row = held[held.raw_row.str.contains(marker, regex=False) & (held.source == source)]
    assert len(row) == 1, held[["source", "reason", "raw_row"]]
    assert row.reason.iloc[0] == reason
    assert detail in row.detail.iloc[0]
    assert row.run_id.iloc[0] and row.ingested_at.notna().all()


def test_input_rows_are_accepted_plus_quarantined(bad_run):
    store, result, extra = bad_run
    held = quarantine(store)
    for name, contract in SOURCES.items():
        accepted = len(store.read(f"SELECT * FROM {name}", inputs=[name]))
        quarantined = int((held.source == name).sum())
        assert accepted + quarantined == len(GOOD[name]) + len(extra.get(name, []))
        assert accepted == len(GOOD[name])  # every good row passed, every bad one was held
        (event,) = [m for m in result.asset_materializations_for_node(name) if m.asset_key.path == [name]]
        meta = event.metadata
        assert (meta["input_rows"].value, meta["accepted_rows"].value, meta["quarantined_rows"].value) == (
            accepted + quarantined, accepted, quarantined)


def test_the_first_of_duplicate_events_is_kept_and_raw_values_are_stored(bad_run):
    store, _, _ = bad_run
    kept = store.read("SELECT * FROM customer_interactions WHERE event_id = 'E1'", inputs=["customer_interactions"])
    assert kept.interaction_type.tolist() == ["view"]  # row 1, not the later click
    held = quarantine(store)
    wrong_type = held[held.reason == "wrong_type"].raw_row.iloc[0]
    assert json.loads(wrong_type)["price"] == "cheap"  # the text as it was in the file
    malformed = held[held.reason == "malformed_line"].raw_row.iloc[0]
    assert json.loads(malformed) == {"csv_line": "E3,C1,P1,view,2026-09-01 09:00:00,S1,surplus"}


def test_timestamps_are_read_as_utc(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", {"customers": ["C3,,2026-03-01T10:00:00+02:00,DE"]})
    store = Warehouse(str(tmp_path / "warehouse"))
    assert ingest(definitions, store, folder, selection=["customers"]).success
    signups = store.read("SELECT customer_id, signup_date FROM customers ORDER BY customer_id", inputs=["customers"])
    # no offset: taken as UTC; an offset: converted to UTC
    assert signups.signup_date.astype(str).tolist() == [
        "2026-01-01 00:00:00", "2026-02-01 08:30:00", "2026-03-01 08:00:00"]


def test_quarantine_is_a_catalog_view_and_keeps_every_source(definitions, tmp_path):
    store = Warehouse(str(tmp_path / "warehouse"))
    folder = write_sources(tmp_path / "input", {
        "customers": [",x@example.com,2026-01-01,GB"],
        "customer_interactions": ["E9,C1,P1,hover,2026-09-01 09:00:00,S1"],
    })
    assert ingest(definitions, store, folder).success
    assert store.query_catalog("SELECT source FROM quarantine ORDER BY source").source.tolist() == [
        "customer_interactions", "customers"]
    # the interactions are fixed and ingested again: only their own quarantine file is replaced
    write_sources(folder)
    still_bad = [HEADERS["customers"], *GOOD["customers"], ",x@e.com,2026-01-01,GB"]
    (folder / "customers.csv").write_text("\n".join(still_bad))
    assert ingest(definitions, store, folder, selection=["customer_interactions"]).success
    assert sorted(store.query_catalog("SELECT source FROM quarantine").source) == ["customers"]
    # one file per snapshot source; the hourly event sources keep theirs per hour (none left) and unplaced
    assert sorted(p.name for p in (Path(store.root) / "quarantine").glob("*.parquet")) == sorted(
        f"{name}__unplaced.parquet" if contract.event_time else f"{name}.parquet" for name, contract in SOURCES.items()
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("empty", "orders.csv is empty (0 bytes)"),
        ("missing", "no file for source 'orders'"),
        ("missing_column", "orders.csv lacks contract column(s) line_value"),
    ],
)
def test_unusable_files_fail_with_one_clear_line(definitions, tmp_path, damage, message):
    """Before a run, finding its hours fails with the reader's line; a run with its hours named fails every
    source, since a location is ingested whole or not at all."""
    folder = write_sources(tmp_path / "input", skip=("orders",) if damage == "missing" else ())
    if damage == "empty":
        (folder / "orders.csv").write_bytes(b"")
    elif damage == "missing_column":
        header = HEADERS["orders"].removesuffix(",line_value")
        (folder / "orders.csv").write_text(f"{header}\nO1,C1,P1,2026-09-01,1\n")
    with pytest.raises(SourceError, match=re.escape(message)):
        source_range_tags(folder)
    store = Warehouse(str(tmp_path / "warehouse"))
    result = materialize_assets(
        list(definitions.assets), selection=list(SOURCES), raise_on_error=False,
        resources=resources_for(store, source=str(folder)), tags=range_tags(first_hour(), first_hour()),
    )
    assert not result.success
    failures = failure_messages(result)  # customers and products fail; the event sources wait on them
    assert len(failures) == 2 and all(message in m and len(m.strip().splitlines()) == 1 for m in failures), failures
    assert not any(result.asset_materializations_for_node(name) for name in SOURCES)


def test_header_only_files_are_empty_events_but_not_an_empty_catalogue(definitions, tmp_path):
    folder = write_sources(tmp_path / "input")
    (folder / "cart_activity.csv").write_text(HEADERS["cart_activity"] + "\n")
    store = Warehouse(str(tmp_path / "warehouse"))
    assert ingest(definitions, store, folder).success
    assert len(store.read("SELECT * FROM cart_activity", inputs=["cart_activity"])) == 0
    (folder / "products.csv").write_text(HEADERS["products"] + "\n")
    result = ingest(definitions, store, folder, selection=["products"])
    assert any("source 'products' has no rows" in m for m in failure_messages(result))


def test_parquet_values_of_the_wrong_type_are_quarantined(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", skip=("products",))
    table = pa.table({
        "product_id": ["P1", "P2", "P3"], "product_name": ["Mug", "Plate", "Bowl"],
        "category": ["kitchen"] * 3, "brand": [None, None, None],
        "price": ["4.5", "3.0", "free"],  # text where the contract says DOUBLE
        "stock_quantity": pa.array([10, 0, 5], pa.int64()), "is_active": [True, False, True],
        "created_at": pa.array([1_700_000_000_000_000] * 3, pa.timestamp("us")),
    })
    pq.write_table(table, folder / "products.parquet")
    store = Warehouse(str(tmp_path / "warehouse"))
    assert ingest(definitions, store, folder, selection=["customers", "products"]).success
    held = quarantine(store)
    assert held[["reason", "source_row"]].values.tolist() == [["wrong_type", 3]]
    products = store.read("SELECT * FROM products ORDER BY product_id", inputs=["products"])
    assert products.product_id.tolist() == ["P1", "P2"] and products.price.tolist() == [4.5, 3.0]
