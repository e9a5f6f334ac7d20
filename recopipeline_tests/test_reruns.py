"""Reruns on the same input give bit-identical tables, however DuckDB's threads split the sums."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recopipeline.lib.contract import REQUIRED_SOURCES, SOURCES
from recopipeline.lib.generator import generate
from recopipeline.lib.keys import keyed_rows
from recopipeline.lib.warehouse import Warehouse
from recopipeline_tests.conftest import AS_OF, stage

# every derived stage that sums money or scores, in dependency order
SUMMING = [
    "customer_segments", "customer_behavior_comprehensive", "customer_product_affinity",
    "customer_category_preferences", "product_popularity", "collaborative_item_similarity",
]
EVENT_FILES = 40  # the event tables as many files: the scan hands them to the threads in a varying order


def load_split(store: Warehouse, data) -> None:
    """The synthetic sources as accepted tables (with their keys), each event source split over EVENT_FILES files."""
    for name in REQUIRED_SOURCES:  # customers and products first: the events read their keys
        contract = SOURCES[name]
        with store.session([r for r in ("customers", "products") if store.exists(r)]) as con:
            rows = f"SELECT {', '.join(contract.column_names)} FROM read_parquet('{data / name}.parquet')"
            rows = keyed_rows(store, con, contract, rows)
            if contract.event_time is None:
                store.write(con, name, rows)
                continue
            for part in range(EVENT_FILES):
                store.write(con, name, f"SELECT * FROM ({rows}) WHERE hash({contract.key[0]}) % {EVENT_FILES} = {part}",
                            partition=f"part{part:02d}")


def snapshot(store: Warehouse) -> dict[str, pd.DataFrame]:
    """Every summing stage's table, sorted on all columns, floats as their bit patterns."""
    tables = {}
    for name in SUMMING:
        frame = store.read(f"SELECT * FROM {name}", inputs=[name])
        frame = frame.sort_values(list(frame.columns), ignore_index=True)
        for column in frame.columns[frame.dtypes == np.float64]:
            frame[column] = frame[column].to_numpy().view(np.int64)
        tables[name] = frame
    return tables


def test_two_runs_on_the_same_input_are_bit_identical(definitions, warehouse, tmp_path):
    assert warehouse.threads == 2
    generate("xs", tmp_path / "xs")
    load_split(warehouse, tmp_path / "xs")
    runs = []
    for _ in range(2):
        stage(definitions, warehouse, SUMMING, as_of=AS_OF)
        runs.append(snapshot(warehouse))
    for name in SUMMING:
        pd.testing.assert_frame_equal(runs[0][name], runs[1][name], check_exact=True, obj=name)
