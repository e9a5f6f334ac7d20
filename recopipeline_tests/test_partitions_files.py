"""Hourly files: writing a window replaces exactly its hours, one file per hour with rows."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from recopipeline.lib.contract import SOURCES
from recopipeline.lib.hourly import covered_since, event_hour, hour_key, hours, source_hours, write_hours
from recopipeline.lib.warehouse import Warehouse

H = datetime(2026, 9, 30, 10)
HOUR_OF = "date_trunc('hour', t)"


def frame(*moments: str) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"R{i}" for i in range(len(moments))], "t": pd.to_datetime(list(moments), format="ISO8601").astype("datetime64[us]")})


def write(store: Warehouse, data: pd.DataFrame, start: datetime, end: datetime, prefix: str = "") -> dict[str, int]:
    with store.session() as con:
        con.register("data", data)
        return write_hours(store, con, "events", "SELECT * FROM data", HOUR_OF, start, end, prefix=prefix)


def stored(store: Warehouse) -> list[tuple]:
    return [tuple(r) for r in store.read("SELECT id, t FROM events ORDER BY t, id", inputs=["events"]).itertuples(index=False)]


def names(store: Warehouse) -> list[str]:
    return sorted(Path(p).name for p in store.files("events"))


def test_each_hour_with_rows_gets_one_file(warehouse):
    counts = write(warehouse, frame("2026-09-30 10:00", "2026-09-30 10:59:59", "2026-09-30 12:30"), H, H.replace(hour=13))
    assert counts == {"2026-09-30-10:00": 2, "2026-09-30-12:00": 1}
    assert names(warehouse) == ["2026-09-30-1000.parquet", "2026-09-30-1200.parquet", "_schema.parquet"]
    assert len(stored(warehouse)) == 3


def test_rewriting_a_window_replaces_exactly_its_hours(warehouse):
    write(warehouse, frame("2026-09-30 10:05", "2026-09-30 11:05", "2026-09-30 12:05"), H, H.replace(hour=13))
    # hour 11 again, now empty; hour 10 and 12 are outside this write and stay as they were
    write(warehouse, frame(), H.replace(hour=11), H.replace(hour=12))
    assert [r[0] for r in stored(warehouse)] == ["R0", "R2"]
    assert "2026-09-30-1100.parquet" not in names(warehouse)
    # hour 10 with different rows: its old rows are gone
    write(warehouse, frame("2026-09-30 10:30", "2026-09-30 10:40"), H, H.replace(hour=11))
    assert [(r[0], r[1].minute) for r in stored(warehouse)] == [("R0", 30), ("R1", 40), ("R2", 5)]


def test_writing_the_same_window_twice_equals_once(warehouse):
    rows = frame("2026-09-30 10:05", "2026-09-30 11:05")
    write(warehouse, rows, H, H.replace(hour=12))
    once = stored(warehouse)
    write(warehouse, rows, H, H.replace(hour=12))
    assert stored(warehouse) == once and names(warehouse) == ["2026-09-30-1000.parquet", "2026-09-30-1100.parquet",
                                                               "_schema.parquet"]


def test_a_row_outside_the_window_is_an_error_and_nothing_changes(warehouse):
    write(warehouse, frame("2026-09-30 10:05"), H, H.replace(hour=11))
    with pytest.raises(ValueError, match="1 row"):
        write(warehouse, frame("2026-09-30 10:10", "2026-09-30 11:00"), H, H.replace(hour=11))
    assert stored(warehouse)[0][1].minute == 5


def test_an_asset_whose_hours_are_all_empty_reads_as_an_empty_table(warehouse):
    write(warehouse, frame(), H, H.replace(hour=11))
    assert names(warehouse) == ["_schema.parquet"] and stored(warehouse) == []


def test_a_whole_table_file_from_before_partitioning_is_removed(warehouse):
    with warehouse.session() as con:
        con.register("old", frame("2026-09-30 10:05"))
        warehouse.write(con, "events", "SELECT * FROM old")
    write(warehouse, frame("2026-09-30 10:05"), H, H.replace(hour=11))
    assert len(stored(warehouse)) == 1 and "data.parquet" not in names(warehouse)


def test_prefixed_hours_live_beside_other_files(warehouse):
    with warehouse.session() as con:
        con.register("other", frame("2020-01-01"))
        warehouse.write(con, "events", "SELECT * FROM other", partition="customers")
    write(warehouse, frame("2026-09-30 10:05"), H, H.replace(hour=11), prefix="orders__")
    assert names(warehouse) == ["customers.parquet", "orders__2026-09-30-1000.parquet"]
    write(warehouse, frame(), H, H.replace(hour=11), prefix="orders__")
    assert names(warehouse) == ["customers.parquet"]


def test_hours_must_be_whole():
    assert [hour_key(h) for h in hours(H, H.replace(hour=12))] == ["2026-09-30-10:00", "2026-09-30-11:00"]
    with pytest.raises(ValueError):
        hours(H.replace(minute=30), H.replace(hour=12))


def test_events_before_the_first_partition_belong_to_it(warehouse):
    first = H
    with warehouse.session() as con:
        con.register("data", frame("2026-07-03 08:00", "2026-09-30 09:59:59", "2026-09-30 10:30", "2026-09-30 11:00"))
        counts = write_hours(warehouse, con, "events", "SELECT * FROM data", event_hour("t", first), first,
                             first.replace(hour=12))
    assert counts == {"2026-09-30-10:00": 3, "2026-09-30-11:00": 1}
    assert covered_since(first, first) is None and covered_since(first.replace(hour=11), first) == first.replace(hour=11)


def test_source_hours_cover_the_events_of_a_location(tmp_path):
    location = tmp_path / "inbox"
    location.mkdir()
    times = {
        "customer_interactions": ["2026-09-30 10:15:00", "2026-09-30 13:59:00", "not a time"],
        "orders": ["2026-09-29 23:10:00"],
        "cart_activity": [],
    }
    for source, values in times.items():
        contract = SOURCES[source]
        frame = pd.DataFrame({c: ["x"] * len(values) for c in contract.column_names})
        frame[contract.event_time] = values
        frame.to_csv(location / f"{source}.csv", index=False)
    last = datetime(2026, 11, 1)
    assert source_hours(location, datetime(2026, 1, 1), last) == (datetime(2026, 9, 29, 23), datetime(2026, 9, 30, 13))
    # events after the last partition (the future) do not widen the range; older events belong to the first one
    assert source_hours(location, datetime(2026, 1, 1), datetime(2026, 9, 30, 12))[1] == datetime(2026, 9, 30, 10)
    assert source_hours(location, datetime(2026, 9, 30, 12), last) == (datetime(2026, 9, 30, 12),
                                                                        datetime(2026, 9, 30, 13))
    assert source_hours(location, datetime(2026, 10, 5), last) == (datetime(2026, 10, 5), datetime(2026, 10, 5))
    for source in times:
        (location / f"{source}.csv").write_text(",".join(SOURCES[source].column_names) + "\n")
    assert source_hours(location, datetime(2026, 1, 1), last) == (last, last)  # no events at all
