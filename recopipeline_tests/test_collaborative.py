"""lib/collaborative.py gives exactly the rows of `sql/collaborative_item_similarity.sql`.

The SQL stays in the repository as the specification: both run over the same warehouses (synthetic xs data and a
quarter of the bundled Online Retail sample's customers, every input built by the stage engine) and must agree on
every row: products, common customers, similarity (to the bit) and rank, under the default tuning, other
thresholds and top-K sizes, and anchor products in batches of a few.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recopipeline.lib import collaborative
from recopipeline.lib.stages import latest_event_time, stage, variables
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse, load_sql, run
from recopipeline_tests.stage_inputs import build_inputs

PAIRS = stage("collaborative_item_similarity")
ORDER = "product_key_1, cf_rank"


@pytest.fixture(scope="module")
def xs(tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    return build_inputs(PAIRS, "synthetic:xs", tmp_path_factory.mktemp("pairs_xs"))


@pytest.fixture(scope="module")
def retail(tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    return build_inputs(PAIRS, "online_retail:sample", tmp_path_factory.mktemp("pairs_retail"), customer_share=4)


def _rows(store: Warehouse, tuning: Tuning, compute) -> pd.DataFrame:
    with store.session(PAIRS.inputs, variables=variables(tuning, latest_event_time(store))) as con:
        for name in PAIRS.prepared:
            run(con, f"CREATE TEMP TABLE {name} AS {load_sql(name)}")
        result = con.sql(f"SELECT * FROM ({compute(con, tuning)}) ORDER BY {ORDER}")
        types = dict(zip(result.columns, map(str, result.types)))
        frame = result.df()
    assert types == {"product_key_1": "INTEGER", "product_key_2": "INTEGER", "common_customers": "BIGINT",
                     "cf_similarity": "DOUBLE", "cf_rank": "BIGINT"}
    return frame


def _specification(con, tuning: Tuning) -> str:
    return load_sql("collaborative_item_similarity")


CASES = {
    "default": Tuning(),
    "one_common_customer_top_3": Tuning(cf_min_common_customers=1, cf_top_k=3),
    "five_strongest_top_50": Tuning(cf_items_per_customer=5, cf_top_k=50),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_synthetic_rows_equal_the_sql(xs: Warehouse, case: str) -> None:
    expected = _rows(xs, CASES[case], _specification)
    actual = _rows(xs, CASES[case], collaborative.collaborative_item_similarity)
    assert len(expected) > 100
    pd.testing.assert_frame_equal(actual, expected, check_exact=True)


@pytest.mark.parametrize("case", ["default", "one_common_customer_top_3"])
def test_online_retail_rows_equal_the_sql(retail: Warehouse, case: str) -> None:
    expected = _rows(retail, CASES[case], _specification)
    assert len(expected) > 100
    pd.testing.assert_frame_equal(_rows(retail, CASES[case], collaborative.collaborative_item_similarity), expected,
                                  check_exact=True)


def test_batches_of_anchor_products_do_not_change_the_rows(xs: Warehouse) -> None:
    whole = _rows(xs, Tuning(), collaborative.collaborative_item_similarity)
    few = _rows(xs, Tuning(batch_products=7), collaborative.collaborative_item_similarity)
    pd.testing.assert_frame_equal(few, whole, check_exact=True)


def test_a_dot_product_beyond_64_bits_of_decimal_units_is_exact() -> None:
    """Two customers hold products 0 and 1 with affinity 3,000: each adds 9e6 (9e18 units of 1e-12), so the sum
    1.8e7 needs the accumulator's high word; the cosine is exactly 1."""
    product_start = np.array([0, 2, 4], dtype=np.int64)  # product -> its rows, by customer
    by_product = np.array([0, 2, 1, 3], dtype=np.int64)
    customer_of_row = np.array([0, 0, 1, 1], dtype=np.int64)
    customer_start = np.array([0, 2, 4], dtype=np.int64)
    product = np.array([0, 1, 0, 1], dtype=np.int32)
    affinity = np.full(4, 3000.0)
    norms = np.full(2, np.sqrt(2 * 3000.0**2))
    first, second, common, similarity, rank = collaborative.item_pairs(
        0, 2, product_start, by_product, customer_of_row, customer_start, product, affinity, norms, 2, 20)
    assert list(first) == [0, 1] and list(second) == [1, 0] and list(common) == [2, 2] and list(rank) == [1, 1]
    assert list(similarity) == [1.0, 1.0]
