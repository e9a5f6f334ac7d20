"""Hourly partitions of the event sources: a partition replaces exactly its hour, backfills are reproducible."""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from recopipeline.defs.partitions import first_hour, hourly_partitions, range_tags
from recopipeline.lib.contract import EVENT_SOURCES
from recopipeline.lib.hourly import HOUR, hour_key
from recopipeline.lib.warehouse import Warehouse
from recopipeline_tests.conftest import resources_for, rows

FIRST = first_hour()  # 2026-09-30 00:00 unless RECOPIPELINE_PARTITION_START says otherwise
H10, H11, H12 = (FIRST.replace(hour=h) for h in (10, 11, 12))
SNAPSHOTS = ["customers", "products"]


def at(hour: datetime, minute: int) -> datetime:
    return hour.replace(minute=minute)


def write_inbox(location: Path, interactions: list[dict]) -> None:
    """A file-mode source directory: two customers, two products, the given interactions, an order, a cart."""
    location.mkdir(parents=True, exist_ok=True)
    tables = {
        "customers": rows("customers", [{"customer_id": "C1"}, {"customer_id": "C2"}]),
        "products": rows("products", [
            {"product_id": p, "product_name": p, "category": "mugs", "price": 5.0} for p in ("P1", "P2")
        ]),
        "customer_interactions": rows("customer_interactions", interactions),
        "orders": rows("orders", [{"order_id": "O1", "customer_id": "C1", "product_id": "P1",
                                   "order_timestamp": at(H11, 30)}]),
        "cart_activity": rows("cart_activity", [{"cart_id": "K1", "customer_id": "C2", "product_id": "P2",
                                                 "added_at": at(H12, 5)}]),
    }
    for name, frame in tables.items():
        frame.to_csv(location / f"{name}.csv", index=False)


def view(customer: str, product: str, moment) -> dict:
    return {"event_id": f"{customer}-{product}-{moment}", "customer_id": customer, "product_id": product,
            "interaction_type": "view", "interaction_timestamp": moment}


INTERACTIONS = [
    view("C1", "P1", datetime(2026, 8, 1, 9)),  # history: before the first partition
    view("C1", "P1", at(H10, 5)),
    view("C2", "P2", at(H10, 59)),
    view("C1", "P2", at(H11, 0)),
    view("C9", "P1", at(H11, 10)),  # unknown customer: quarantined in its hour
    view("C2", "P1", at(H12, 45)),
]


@pytest.fixture
def inbox(tmp_path) -> Path:
    location = tmp_path / "inbox"
    write_inbox(location, INTERACTIONS)
    return location


def ingest(definitions, store: Warehouse, location: Path, first: datetime, last: datetime, selection=None):
    result = dg.materialize(
        list(definitions.assets),
        selection=selection or [*SNAPSHOTS, *EVENT_SOURCES],
        resources=resources_for(store, str(location), max_quarantine_share=1.0),  # bad rows on purpose
        tags=range_tags(first, last),
    )
    assert result.success
    return result


def files(store: Warehouse, asset: str) -> dict[str, bytes]:
    return {Path(p).name: Path(p).read_bytes() for p in store.files(asset)}


def parquet(content: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(content))


def events(store: Warehouse) -> list[tuple]:
    frame = store.read("SELECT customer_id, product_id, interaction_timestamp FROM customer_interactions "
                       "ORDER BY interaction_timestamp", inputs=["customer_interactions"])
    return [tuple(r) for r in frame.itertuples(index=False)]


def test_event_sources_are_hourly_and_backfill_in_one_run(definitions):
    graph = definitions.resolve_asset_graph()
    for name in EVENT_SOURCES:
        node = graph.get(dg.AssetKey(name))
        assert node.partitions_def == hourly_partitions
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
    assert graph.get(dg.AssetKey("customers")).partitions_def is None
    assert hourly_partitions.timezone == "UTC"


def test_a_backfill_of_three_hours_run_twice_gives_identical_tables(definitions, warehouse, inbox):
    ingest(definitions, warehouse, inbox, FIRST, H12)
    once = {name: files(warehouse, name) for name in EVENT_SOURCES}
    first_events = events(warehouse)
    ingest(definitions, warehouse, inbox, H10, H12)  # the three hours again
    assert events(warehouse) == first_events
    for name in EVENT_SOURCES:
        again = files(warehouse, name)
        assert again.keys() == once[name].keys(), name
        for file_name in again:  # same rows, byte for byte
            pd.testing.assert_frame_equal(parquet(again[file_name]), parquet(once[name][file_name]))
    assert sorted(once["customer_interactions"]) == [
        "2026-09-30-0000.parquet", "2026-09-30-1000.parquet", "2026-09-30-1100.parquet", "2026-09-30-1200.parquet",
        "_schema.parquet",
    ]


def test_the_first_partition_holds_the_history(definitions, warehouse, inbox):
    ingest(definitions, warehouse, inbox, FIRST, FIRST)
    assert events(warehouse) == [("C1", "P1", datetime(2026, 8, 1, 9))]


def test_rematerializing_an_hour_replaces_exactly_that_hour(definitions, warehouse, inbox):
    ingest(definitions, warehouse, inbox, FIRST, H12)
    changed = [r for r in INTERACTIONS if r["interaction_timestamp"] != at(H11, 0)]  # hour 11 loses an event ...
    changed = [{**r, "product_id": "P2"} if r["interaction_timestamp"] == at(H10, 5) else r for r in changed]
    changed.append(view("C2", "P2", at(H11, 20)))  # ... and gains one; hour 10 changed too
    write_inbox(inbox, changed)
    ingest(definitions, warehouse, inbox, H11, H11, selection=["customer_interactions"])
    assert events(warehouse) == [
        ("C1", "P1", datetime(2026, 8, 1, 9)),
        ("C1", "P1", at(H10, 5)),  # hour 10 was not rematerialized: still as first ingested
        ("C2", "P2", at(H10, 59)),
        ("C2", "P2", at(H11, 20)),  # hour 11 is exactly the new file's hour 11
        ("C2", "P1", at(H12, 45)),
    ]


def test_quarantine_is_kept_per_source_and_hour(definitions, warehouse, inbox):
    bad_time = {**view("C1", "P1", None), "interaction_timestamp": None}
    write_inbox(inbox, INTERACTIONS + [bad_time])
    frame = pd.read_csv(inbox / "customer_interactions.csv")
    frame.loc[frame.interaction_timestamp.isna(), "interaction_timestamp"] = "yesterday"
    frame.to_csv(inbox / "customer_interactions.csv", index=False)
    for _ in range(2):  # idempotent: the second ingest replaces, never duplicates
        result = ingest(definitions, warehouse, inbox, H10, H12)
    quarantine = warehouse.read(
        "SELECT reason, coalesce(partition_key, '-'), parse_filename(filename) AS file FROM read_parquet("
        f"'{warehouse.asset_dir('quarantine')}/customer_interactions__*.parquet', filename = true) ORDER BY file",
    )
    assert [tuple(r) for r in quarantine.itertuples(index=False)] == [
        ("unknown_customer", "2026-09-30-11:00", "customer_interactions__2026-09-30-1100.parquet"),
        ("wrong_type", "-", "customer_interactions__unplaced.parquet"),
    ]
    materialization = next(m for m in result.asset_materializations_for_node("customer_interactions")
                           if m.asset_key == dg.AssetKey("customer_interactions"))
    # the run owned its three hours' rows and the unplaced one: input = accepted + quarantined
    assert materialization.metadata["input_rows"].value == 6
    assert materialization.metadata["accepted_rows"].value == 4
    assert materialization.metadata["quarantined_rows"].value == 2


def test_an_hour_without_rows_has_no_file(definitions, warehouse, inbox):
    ingest(definitions, warehouse, inbox, FIRST, H12)
    write_inbox(inbox, [r for r in INTERACTIONS if r["interaction_timestamp"] < H12])
    ingest(definitions, warehouse, inbox, H12, H12, selection=["customer_interactions"])
    assert warehouse.partition_path("customer_interactions", hour_key(H12)) not in warehouse.files(
        "customer_interactions"
    )
    assert max(e[2] for e in events(warehouse)) < H12 + HOUR
