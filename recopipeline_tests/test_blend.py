"""lib/blend.py gives exactly the rows of `sql/product_recommendations.sql`.

The SQL stays in the repository as the oracle of this test: both run over the same warehouse (synthetic xs data
and a quarter of the bundled Online Retail sample's customers, every input of the blend built by the stage
engine) and must agree on every
row, rank, type, evidence and variant, with scores within 1e-9, and on every strategy's normalised score
(`<strategy>_score`) to the bit. The configurations exercise A/B variants with
different weights, strategies switched off (weight zero everywhere or in one variant), "buy it again" with
purchased products kept, the trending list for everyone and in one variant, and batches of a few customers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from recopipeline.lib import blend
from recopipeline.lib.stages import latest_event_time, run_stage, stage, variables
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse, load_sql, run
from recopipeline_tests.stage_inputs import build_inputs

BLEND = stage("product_recommendations")
ORDER = ["customer_key", "recommendation_rank"]
COLUMNS = {
    "customer_key": "INTEGER", "product_key": "INTEGER", "recommendation_type": "VARCHAR",
    "recommendation_score": "DOUBLE", "strategies": "VARCHAR", "evidence": "VARCHAR",
    "recommendation_rank": "BIGINT", "variant": "VARCHAR", **dict.fromkeys(blend.SCORE_COLUMNS, "DOUBLE"),
}  # the written table's columns, in order

A_B = Tuning(
    ab_variants=json.dumps({
        "control": {"share": 0.4},
        "no_ease": {"share": 0.35, "weight_ease": 0.0, "weight_popular": 0.5},
        "items_only": {"share": 0.25, "weight_category_preference": 0.0, "weight_popular": 0.0,
                       "weight_collaborative": 3.0},
    }),
    weight_complementary=0.0,  # zero in every variant
)
REPURCHASE = Tuning(weight_repurchase=2.0, exclude_purchased=False, weight_collaborative=0.0)
# trending on for everyone, and in one variant only (with purchased products kept in the other)
TRENDING = Tuning(weight_trending=2.0)
TRENDING_A_B = Tuning(
    ab_variants=json.dumps({"control": {"share": 0.5}, "trending": {"share": 0.5, "weight_trending": 0.5}}),
    weight_repurchase=1.0, exclude_purchased=False,
)


@pytest.fixture(scope="module")
def xs(tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    return build_inputs(BLEND, "synthetic:xs", tmp_path_factory.mktemp("blend_xs"))


@pytest.fixture(scope="module")
def retail(tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    return build_inputs(BLEND, "online_retail:sample", tmp_path_factory.mktemp("blend_retail"), customer_share=4)


def _oracle(con, tuning: Tuning) -> str:
    """The SQL's blend tables (weights per variant in priority order, the variants' hash ranges) and the SQL."""
    run(con, "CREATE OR REPLACE TEMP TABLE strategy_weights (variant VARCHAR, strategy VARCHAR, weight DOUBLE, "
             "priority INTEGER)")
    for variant, weights in tuning.variant_strategy_weights().items():
        for priority, (strategy, weight) in enumerate(weights.items(), start=1):
            run(con, "INSERT INTO strategy_weights VALUES (?, ?, ?, ?)", [variant, strategy, weight, priority])
    run(con, "CREATE OR REPLACE TEMP TABLE variant_buckets (variant VARCHAR, lower_bound UBIGINT, upper_bound UBIGINT)")
    for variant, lower, upper in tuning.experiment().buckets():
        run(con, "INSERT INTO variant_buckets VALUES (?, ?, ?)", [variant, lower, upper])
    return load_sql("product_recommendations")


def _as_text(sql: str) -> str:
    """The rows of `sql` with the blend's few-valued texts as VARCHAR: the blend gives them as ENUMs, which the
    written table holds as VARCHAR (checked below)."""
    return (f"SELECT * REPLACE (recommendation_type::VARCHAR AS recommendation_type, strategies::VARCHAR AS "
            f"strategies, variant::VARCHAR AS variant) FROM ({sql})")


def _rows(store: Warehouse, tuning: Tuning, compute) -> pd.DataFrame:
    with store.session(BLEND.inputs, variables=variables(tuning, latest_event_time(store))) as con:
        result = con.sql(f"{_as_text(compute(con, tuning))} ORDER BY {', '.join(ORDER)}")
        types = list(zip(result.columns, map(str, result.types)))
        frame = result.df()
    assert types == list(COLUMNS.items())
    return frame


def _assert_same(store: Warehouse, tuning: Tuning) -> pd.DataFrame:
    expected = _rows(store, tuning, _oracle)
    actual = _rows(store, tuning, blend.product_recommendations)
    assert len(actual) == len(expected) > 0
    scores = (actual["recommendation_score"] - expected["recommendation_score"]).abs().max()
    assert scores <= 1e-9
    others = [c for c in expected.columns if c != "recommendation_score"]
    # the normalised scores are the same division of the same doubles on both sides: compared to the bit
    pd.testing.assert_frame_equal(actual[others], expected[others], check_exact=True)
    normalised = actual[list(blend.SCORE_COLUMNS)]
    assert ((normalised >= 0) & (normalised <= 1)).all().all()
    proposed = actual["strategies"].str.split(",").apply(set)
    for strategy, column in zip(blend.STRATEGIES, blend.SCORE_COLUMNS):  # > 0 exactly where it contributed
        assert ((actual[column] > 0) == proposed.apply(lambda s, name=strategy: name in s)).all(), column
    return actual


# two seeds: the evidence lists of EASE's many bought products are cut to the strongest two
FEW_SEEDS = Tuning(seeds_per_customer=2)


@pytest.mark.parametrize("tuning", [Tuning(), A_B, REPURCHASE, FEW_SEEDS, TRENDING, TRENDING_A_B],
                         ids=["default", "a_b", "repurchase", "few_seeds", "trending", "trending_a_b"])
def test_synthetic_rows_equal_the_sql(xs: Warehouse, tuning: Tuning) -> None:
    rows = _assert_same(xs, tuning)
    strategies = set(rows["recommendation_type"])
    if tuning in (TRENDING, TRENDING_A_B):
        trending = rows[rows["recommendation_type"] == "trending"]
        assert len(trending) > 0 and set(trending["evidence"]) == {"trending"}
        assert "trending" in strategies and rows["strategies"].str.contains("trending").any()
    else:
        assert not rows["strategies"].str.contains("trending").any()
    if tuning is TRENDING_A_B:
        assert not rows[rows["variant"] == "control"]["strategies"].str.contains("trending").any()
    if tuning is A_B:
        assert set(rows["variant"]) == {"control", "no_ease", "items_only"}
        assert "complementary" not in strategies
        assert not rows[rows["variant"] == "no_ease"]["strategies"].str.contains("ease").any()
    if tuning is REPURCHASE:
        assert "repurchase" in strategies and "collaborative" not in strategies


@pytest.mark.parametrize("tuning", [Tuning(), A_B, TRENDING], ids=["default", "a_b", "trending"])
def test_online_retail_rows_equal_the_sql(retail: Warehouse, tuning: Tuning) -> None:
    rows = _assert_same(retail, tuning)
    if tuning is TRENDING:
        assert (rows["recommendation_type"] == "trending").any()


def test_batches_do_not_change_the_rows(xs: Warehouse) -> None:
    whole = _rows(xs, A_B, blend.product_recommendations)
    few = Tuning(**{**A_B.as_dict(), "batch_customers": 7})
    pd.testing.assert_frame_equal(_rows(xs, few, blend.product_recommendations), whole)


def test_the_result_can_be_read_twice(xs: Warehouse) -> None:
    tuning = Tuning()
    with xs.session(BLEND.inputs, variables=variables(tuning, latest_event_time(xs))) as con:
        sql = blend.product_recommendations(con, tuning)
        (count,) = con.sql(f"SELECT count(*) FROM ({sql})").fetchall()[0]
        again = con.sql(f"{_as_text(sql)} ORDER BY {', '.join(ORDER)}").df()
    assert count == len(again) > 0
    pd.testing.assert_frame_equal(again, _rows(xs, tuning, blend.product_recommendations))


def test_the_stage_writes_the_rows_in_their_order_without_sorting(xs: Warehouse, tmp_path: Path) -> None:
    """The blend gives its rows in (customer_key, recommendation_rank) order; the engine writes them as they come."""
    assert BLEND.rows_in_order
    copy = Warehouse(root=str(tmp_path / "warehouse"), memory_limit="1GB", threads=2)
    for name in BLEND.inputs:
        (tmp_path / "warehouse" / name).mkdir(parents=True)
        for file in Path(xs.asset_dir(name)).glob("*.parquet"):
            (tmp_path / "warehouse" / name / file.name).write_bytes(file.read_bytes())
    run_stage(copy, BLEND, Tuning(batch_customers=50), latest_event_time(xs))
    (path,) = copy.files(BLEND.name)
    written = copy.read(f"SELECT customer_key, recommendation_rank FROM read_parquet('{path}', file_row_number = true) "
                        "ORDER BY file_row_number")
    assert len(written) > 1000
    pd.testing.assert_frame_equal(written, written.sort_values(ORDER, ignore_index=True))
    types = list(copy.read(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet('{path}'))")
                 .itertuples(index=False, name=None))
    assert types == list(COLUMNS.items())
