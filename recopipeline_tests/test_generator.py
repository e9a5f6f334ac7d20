"""Tests of the synthetic data generator at scale xs."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from recopipeline.lib.contract import CART_STATUSES, INTERACTION_TYPES, REQUIRED_SOURCES, SOURCES
from recopipeline.lib.generator import SCALES, generate

END = datetime(2026, 10, 1)
DAYS = 90


@pytest.fixture(scope="module")
def xs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int], list[str]]:
    out = tmp_path_factory.mktemp("xs")
    lines: list[str] = []
    counts = generate("xs", out, seed=42, end=END, days=DAYS, progress=lines.append)
    return out, counts, lines


@pytest.fixture(scope="module")
def con(xs) -> duckdb.DuckDBPyConnection:
    out, _, _ = xs
    connection = duckdb.connect()
    for name in REQUIRED_SOURCES:
        connection.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{out / name}.parquet')")
    return connection


def scalar(con: duckdb.DuckDBPyConnection, sql: str):
    return con.execute(sql).fetchall()[0][0]


def read_all(out: Path) -> dict[str, object]:
    return {name: pq.read_table(out / f"{name}.parquet") for name in REQUIRED_SOURCES}


def test_writes_exactly_the_five_required_sources(xs):
    out, counts, lines = xs
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.parquet" for name in REQUIRED_SOURCES)
    assert set(counts) == set(REQUIRED_SOURCES)
    assert any(line.startswith("customer_interactions: ") for line in lines)


@pytest.mark.parametrize("source", list(REQUIRED_SOURCES))
def test_follows_the_contract(con, xs, source):
    contract = SOURCES[source]
    described = con.execute(f"DESCRIBE {source}").fetchall()
    assert [(row[0], row[1]) for row in described] == [(c.name, c.type) for c in contract.columns]
    for column in contract.columns:
        if not column.nullable:
            assert scalar(con, f"SELECT count(*) FROM {source} WHERE {column.name} IS NULL") == 0, column.name
    key = ", ".join(contract.key)
    assert scalar(con, f"SELECT count(*) FROM (SELECT {key} FROM {source} GROUP BY ALL HAVING count(*) > 1)") == 0
    assert scalar(con, f"SELECT count(*) FROM {source}") == xs[1][source]


def test_categorical_values(con):
    kinds = {row[0] for row in con.execute("SELECT DISTINCT interaction_type FROM customer_interactions").fetchall()}
    assert kinds == set(INTERACTION_TYPES)
    statuses = {row[0] for row in con.execute("SELECT DISTINCT cart_status FROM cart_activity").fetchall()}
    assert statuses <= set(CART_STATUSES) and {"abandoned", "checked_out"} <= statuses
    assert scalar(con, "SELECT count(*) FROM orders WHERE quantity <= 0 OR line_value < 0") == 0
    assert scalar(con, "SELECT count(*) FROM products WHERE price < 0") == 0


def test_sizes_near_targets(xs):
    scale, counts = SCALES["xs"], xs[1]
    assert counts["customers"] == scale.customers
    assert counts["products"] == scale.products
    assert 0.7 * scale.events <= counts["customer_interactions"] <= 1.3 * scale.events


def test_deterministic(xs, tmp_path):
    out, _, _ = xs
    generate("xs", tmp_path / "same", seed=42, end=END, days=DAYS)
    generate("xs", tmp_path / "other", seed=7, end=END, days=DAYS)
    first, same, other = read_all(out), read_all(tmp_path / "same"), read_all(tmp_path / "other")
    for name in REQUIRED_SOURCES:
        assert first[name].equals(same[name]), name
    assert not first["customer_interactions"].equals(other["customer_interactions"])
    assert not first["products"].equals(other["products"])


def test_every_order_line_has_a_purchase_event(con):
    unmatched = scalar(con, """
        SELECT count(*) FROM orders o
        WHERE NOT EXISTS (
            SELECT 1 FROM customer_interactions i
            WHERE i.interaction_type = 'purchase' AND i.customer_id = o.customer_id
              AND i.product_id = o.product_id AND i.interaction_timestamp = o.order_timestamp)
    """)
    assert unmatched == 0
    assert scalar(con, "SELECT count(*) FROM orders") == scalar(
        con, "SELECT count(*) FROM customer_interactions WHERE interaction_type = 'purchase'"
    )


def test_events_inside_the_window_and_after_signup_and_listing(con):
    start = END - timedelta(days=DAYS)
    for source, column in (("customer_interactions", "interaction_timestamp"), ("orders", "order_timestamp"),
                           ("cart_activity", "added_at")):
        low, high = con.execute(f"SELECT min({column}), max({column}) FROM {source}").fetchall()[0]
        assert start <= low and high <= END, source
    assert scalar(con, """
        SELECT count(*) FROM customer_interactions i JOIN customers c USING (customer_id)
        WHERE i.interaction_timestamp < c.signup_date
    """) == 0
    assert scalar(con, """
        SELECT count(*) FROM customer_interactions i JOIN products p USING (product_id)
        WHERE i.interaction_timestamp < p.created_at
    """) == 0


def test_references_resolve(con):
    for source in ("customer_interactions", "orders", "cart_activity"):
        for key, parent in (("customer_id", "customers"), ("product_id", "products")):
            orphans = f"SELECT count(*) FROM {source} WHERE {key} NOT IN (SELECT {key} FROM {parent})"
            assert scalar(con, orphans) == 0, (source, key)


def test_products_bought_together(con):
    pairs = scalar(con, """
        SELECT count(*) FROM (
            SELECT a.product_id, b.product_id FROM orders a
            JOIN orders b ON a.order_id = b.order_id AND a.product_id < b.product_id
            GROUP BY ALL HAVING count(DISTINCT a.order_id) >= 5)
    """)
    assert pairs >= 10


def test_catalogue_and_customer_edge_cases(con):
    assert scalar(con, "SELECT count(*) FROM products WHERE stock_quantity = 0") > 0
    assert scalar(con, "SELECT count(*) FROM products WHERE NOT is_active") > 0
    assert scalar(con, "SELECT count(*) FROM products WHERE brand IS NULL") > 0
    assert scalar(con, """
        SELECT count(*) FROM customers
        WHERE customer_id NOT IN (SELECT customer_id FROM customer_interactions)
    """) > 0


def test_customers_buy_again(con):
    assert scalar(con, """
        SELECT count(*) FROM (
            SELECT customer_id, product_id FROM orders GROUP BY ALL HAVING count(DISTINCT order_id) >= 2)
    """) > 0
