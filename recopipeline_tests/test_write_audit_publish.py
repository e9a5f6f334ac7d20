"""Write, audit, publish: a table that fails a blocking check never becomes what downstream assets read."""

from __future__ import annotations

import os
import time

import dagster as dg
import pandas as pd

from recopipeline.lib.contract import SOURCES
from recopipeline.lib.warehouse import LEFTOVER_AGE_SECONDS, Warehouse
from recopipeline_tests.conftest import materialize_assets, resources_for
from recopipeline_tests.test_validation import HEADERS, write_sources

ORDERS = [f"O{i},C1,P{1 + i % 2},2026-09-0{1 + i % 5} 10:00:00,1,4.5" for i in range(1, 11)]
BAD_QUANTITIES = [f"X{i},C1,P1,2026-09-02 10:00:00,0,0" for i in range(1, 4)]


def test_staged_files_are_invisible_until_published_and_discarded_on_failure(warehouse):
    with warehouse.session() as con:
        warehouse.write(con, "things", "SELECT 1 AS n")
        staged = warehouse.stage("things")
        staged.write(con, "things", "SELECT 2 AS n UNION ALL SELECT 3")
        assert warehouse.read("SELECT sum(n) AS s FROM things", ["things"]).s.item() == 1  # readers: the current one
        assert staged.read("SELECT sum(n) AS s FROM things", ["things"]).s.item() == 5  # the audit: the candidate
        staged.discard()
        assert warehouse.read("SELECT sum(n) AS s FROM things", ["things"]).s.item() == 1
        staged = warehouse.stage("things")
        staged.write(con, "things", "SELECT 7 AS n")
        staged.publish()
    assert warehouse.read("SELECT sum(n) AS s FROM things", ["things"]).s.item() == 7
    assert sorted(os.listdir(warehouse.asset_dir("things"))) == ["data.parquet"]  # nothing left behind


def test_a_killed_writers_leftovers_are_removed_by_the_next_write(warehouse):
    folder = warehouse.asset_dir("things")
    os.makedirs(f"{folder}/.candidate-dead")
    open(f"{folder}/.0123.tmp", "w").close()
    open(f"{folder}/.4567.tmp", "w").close()
    hour_ago = time.time() - LEFTOVER_AGE_SECONDS - 1
    for name in (".candidate-dead", ".0123.tmp"):
        os.utime(f"{folder}/{name}", (hour_ago, hour_ago))
    staged = warehouse.stage("things")
    with warehouse.session() as con:
        staged.write(con, "things", "SELECT 1 AS n")
    staged.publish()
    # the killed step's files go; a file touched within the hour may be a live step's and stays
    assert sorted(os.listdir(folder)) == [".4567.tmp", "data.parquet"]


def test_a_failed_blocking_check_keeps_the_previous_table_for_downstream(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", {"orders": ORDERS})
    store = Warehouse(str(tmp_path / "warehouse"), memory_limit="1GB", threads=2)
    instance = dg.DagsterInstance.ephemeral()  # one instance: the runs see each other's materializations
    first = materialize_assets(
        list(definitions.assets), selection=[*SOURCES, "product_repurchase_rates"],
        resources=resources_for(store, source=str(folder)), instance=instance,
    )
    assert first.success
    good_orders = store.read("SELECT * FROM orders ORDER BY order_id", inputs=["orders"])
    assert len(good_orders) == 1 + len(ORDERS)

    # new orders: most lines are good but 3 of 8 have quantity 0 (37.5% quarantined, the limit is 1%)
    (folder / "orders.csv").write_text("\n".join([HEADERS["orders"], *ORDERS[:5], *BAD_QUANTITIES]) + "\n")
    second = materialize_assets(
        list(definitions.assets), selection=["orders", "product_repurchase_rates"],
        resources=resources_for(store, source=str(folder), quarantine_share_min_rows=1), raise_on_error=False,
        instance=instance,
    )
    assert not second.success
    (check,) = [c for c in second.get_asset_check_evaluations() if c.check_name == "quarantine_share"]
    assert not check.passed
    pd.testing.assert_frame_equal(store.read("SELECT * FROM orders ORDER BY order_id", inputs=["orders"]), good_orders)
    held = store.read("SELECT reason FROM quarantine WHERE source = 'orders'", inputs=["quarantine"])
    assert held.reason.tolist() == ["non_positive_quantity"] * 3  # what was rejected stays visible

    # a later run of a downstream asset alone builds on the last audited orders
    third = materialize_assets(
        list(definitions.assets), selection=["product_repurchase_rates"], resources=resources_for(store, source=str(folder)),
        instance=instance,
    )
    assert third.success
    (buyers,) = store.read("SELECT sum(buyers) AS b FROM product_repurchase_rates", ["product_repurchase_rates"]).b
    assert buyers == good_orders.groupby("product_id").customer_id.nunique().sum()
    assert not [p for p in os.listdir(store.asset_dir("orders")) if p.startswith(".")]

    # the rejected version is not what the next ingest's drift is measured against
    (folder / "orders.csv").write_text("\n".join([HEADERS["orders"], *ORDERS]) + "\n")
    fourth = materialize_assets(
        list(definitions.assets), selection=["orders"], resources=resources_for(store, source=str(folder)),
        instance=instance,
    )
    (drift,) = [c for c in fourth.get_asset_check_evaluations() if c.check_name == "row_count_drift"]
    assert drift.metadata["previous_rows"].value == len(good_orders)


def test_an_hour_repeating_an_event_id_of_an_earlier_hour_is_not_published(definitions, tmp_path):
    """An hour's ingest sees only its own rows; its unique_key check compares their ids with the whole table."""
    folder = write_sources(tmp_path / "input")
    store = Warehouse(str(tmp_path / "warehouse"), memory_limit="1GB", threads=2)
    resources = resources_for(store, source=str(folder))
    assert materialize_assets(list(definitions.assets), selection=list(SOURCES), resources=resources).success
    interactions = folder / "customer_interactions.csv"
    base = interactions.read_text()

    def ingest_hour(line: str, hour: str) -> dg.ExecuteInProcessResult:
        interactions.write_text(base + line + "\n")
        return dg.materialize(
            list(definitions.assets), selection=["customer_interactions"], resources=resources,
            partition_key=hour, raise_on_error=False,
        )

    def events() -> list[str]:
        frame = store.read("SELECT event_id FROM customer_interactions ORDER BY event_id", ["customer_interactions"])
        return frame.event_id.tolist()

    fresh = ingest_hour("E7,C2,P1,view,2026-09-30 11:10:00,S7", "2026-09-30-11:00")
    assert fresh.success and events() == ["E1", "E2", "E7"]
    repeated = ingest_hour("E1,C2,P1,click,2026-09-30 12:10:00,S8", "2026-09-30-12:00")
    (unique,) = [c for c in repeated.get_asset_check_evaluations() if c.check_name == "unique_key"]
    assert not repeated.success and not unique.passed
    assert unique.metadata["violations"].value == 1 and "E1" in unique.metadata["examples"].value
    assert events() == ["E1", "E2", "E7"]  # the hour was not published
