"""Integer keys (lib/keys.py): ids numbered once in id order, stable across ingests, on every source row, and
joined back where people read the tables."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from recopipeline.lib.contract import SOURCES
from recopipeline.lib.keys import DictionaryError, keyed_rows
from recopipeline.lib.readonly_sql import query
from recopipeline.lib.warehouse import Warehouse
from recopipeline_tests.conftest import materialize_assets, resources_for

HEADERS = {name: ",".join(contract.column_names) for name, contract in SOURCES.items()}


def write(folder: Path, customers: list[str], products: list[str], events: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = {
        "customers": [f"{c},,2026-01-01,GB" for c in customers],
        "products": [f"{p},{p},kitchen,Acme,4.5,10,true,2025-06-01" for p in products],
        "orders": [],
        "customer_interactions": [f"E{i},{c},{p},view,2026-09-01 09:00:00,S1" for i, (c, p) in enumerate(events)],
        "cart_activity": [],
    }
    for name, rows in lines.items():
        (folder / f"{name}.csv").write_text("\n".join([HEADERS[name], *rows]) + "\n")
    return folder


def ingest(definitions, store: Warehouse, folder: Path) -> None:
    result = materialize_assets(
        list(definitions.assets), selection=list(SOURCES), resources=resources_for(store, source=str(folder)),
    )
    assert result.success


def keys(store: Warehouse, table: str) -> dict[str, int]:
    frame = store.read(f"SELECT * FROM {table}", inputs=[table])
    return dict(zip(frame.iloc[:, 0], frame.iloc[:, 1]))


def test_keys_are_given_in_id_order_and_never_change(definitions, tmp_path):
    store = Warehouse(str(tmp_path / "warehouse"), memory_limit="1GB", threads=2)
    ingest(definitions, store, write(tmp_path / "first", ["C2", "C1"], ["P9", "P1"], [("C1", "P9")]))
    assert keys(store, "customer_keys") == {"C1": 1, "C2": 2}
    assert keys(store, "product_keys") == {"P1": 1, "P9": 2}

    # C0 sorts first but is new: it gets the next number; C2 leaves the source and keeps its key for its return
    ingest(definitions, store, write(tmp_path / "second", ["C1", "C0", "C3"], ["P1", "P9", "P5"], [("C3", "P5")]))
    assert keys(store, "customer_keys") == {"C1": 1, "C2": 2, "C0": 3, "C3": 4}
    assert keys(store, "product_keys") == {"P1": 1, "P9": 2, "P5": 3}
    customers = store.read("SELECT customer_id, customer_key FROM customers ORDER BY customer_id", ["customers"])
    assert list(customers.itertuples(index=False, name=None)) == [("C0", 3), ("C1", 1), ("C3", 4)]

    ingest(definitions, store, write(tmp_path / "third", ["C2", "C1"], ["P1"], []))
    assert keys(store, "customer_keys") == {"C1": 1, "C2": 2, "C0": 3, "C3": 4}


def test_every_event_row_carries_its_customers_and_products_keys(definitions, tmp_path):
    store = Warehouse(str(tmp_path / "warehouse"), memory_limit="1GB", threads=2)
    events = [("C1", "P2"), ("C2", "P1"), ("C2", "P2")]
    ingest(definitions, store, write(tmp_path / "input", ["C1", "C2"], ["P1", "P2"], events))
    rows = store.read(
        "SELECT customer_id, product_id, customer_key, product_key FROM customer_interactions ORDER BY event_id",
        ["customer_interactions"],
    )
    assert list(rows.itertuples(index=False, name=None)) == [("C1", "P2", 1, 2), ("C2", "P1", 2, 1), ("C2", "P2", 2, 2)]


def test_the_catalog_shows_the_ids_next_to_the_keys(definitions, tmp_path):
    store = Warehouse(str(tmp_path / "warehouse"), memory_limit="1GB", threads=2)
    ingest(definitions, store, write(tmp_path / "input", ["C1", "C2"], ["P1", "P2"], [("C2", "P1")]))
    with store.session(["customer_interactions"]) as con:
        store.write(con, "customer_product_affinity",
                    "SELECT customer_key, product_key, 1.0 AS weighted_affinity_score FROM customer_interactions")
    store.refresh_catalog()
    shown = store.query_catalog("SELECT * FROM customer_product_affinity")
    assert list(shown.columns) == ["customer_id", "customer_key", "product_id", "product_key", "weighted_affinity_score"]
    assert list(shown.itertuples(index=False, name=None)) == [("C2", 2, "P1", 1, 1.0)]


def test_recopipeline_sql_reads_the_ids_of_a_table_of_keys(definitions, tmp_path):
    store = Warehouse(str(tmp_path / "warehouse"), memory_limit="1GB", threads=2)
    ingest(definitions, store, write(tmp_path / "input", ["C1", "C2"], ["P1", "P2"], [("C2", "P1")]))
    with store.session(["customer_interactions"]) as con:
        store.write(con, "customer_product_affinity", "SELECT customer_key, product_key FROM customer_interactions")
    found = query(store, "SELECT customer_id, product_id, customer_key FROM customer_product_affinity")
    assert list(found.itertuples(index=False, name=None)) == [("C2", "P1", 2)]


def test_a_lost_dictionary_stops_the_ingest_instead_of_numbering_again(definitions, tmp_path):
    store = Warehouse(str(tmp_path / "warehouse"), memory_limit="1GB", threads=2)
    ingest(definitions, store, write(tmp_path / "input", ["C1", "C2"], ["P1"], []))
    shutil.rmtree(store.asset_dir("customer_keys"))
    with store.session() as con, pytest.raises(DictionaryError, match="'customer_keys' is missing but 'customers'"):
        keyed_rows(store, con, SOURCES["customers"], "SELECT 'C3' AS customer_id")


def test_the_catalog_remakes_only_what_changed_and_drops_what_is_gone(tmp_path):
    store = Warehouse(str(tmp_path / "warehouse"), memory_limit="1GB", threads=2)
    with store.session() as con:
        store.write(con, "alpha", "SELECT 1 AS x")
        store.refresh_catalog()
        store.write(con, "alpha", "SELECT 2 AS x")  # new files: the view reads the folder, nothing to remake
        store.write(con, "beta", "SELECT 3 AS y")  # new to the catalog
    store.refresh_catalog([])
    assert store.query_catalog("SELECT (SELECT x FROM alpha) AS a, (SELECT y FROM beta) AS b").values.tolist() == [[2, 3]]
    with store.session() as con:
        store.write(con, "alpha", "SELECT 4 AS x, 5 AS z")  # a new column: its writer names it as changed
    shutil.rmtree(store.asset_dir("beta"))
    store.refresh_catalog(["alpha"])
    assert store.query_catalog("SELECT * FROM alpha").values.tolist() == [[4, 5]]
    views = store.query_catalog("SELECT view_name FROM duckdb_views() WHERE NOT internal")
    assert views.view_name.tolist() == ["alpha"]
