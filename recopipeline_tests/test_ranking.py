"""The learned ranking: its metric, its promotion rule, its features (as of their time only) and how a promoted
model ranks the candidates."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recopipeline.lib import ranking
from recopipeline.lib.stages import run_stages, upstream_stages
from recopipeline.lib.tuning import Tuning
from recopipeline_tests.conftest import stage, table

ON = {"learned_ranking": True}


def candidates_frame(queries: int, per_query: int, signal: float, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Queries of candidates whose label `product_affinity` predicts with the given signal (0: not at all)."""
    rng = np.random.default_rng(seed)
    rows = []
    for query in range(queries):
        labels = (rng.random(per_query) < 0.2).astype(int)
        labels[rng.integers(per_query)] = 1
        for rank, label in enumerate(rng.permutation(labels), start=1):
            row = {name: 0.0 for name in ranking.FEATURES}
            row |= {"blend_rank": float(rank), "product_affinity": signal * label + rng.random()}
            rows.append({"query": query, "customer_key": query, **row, "label": int(label)})
    frame = pd.DataFrame(rows)
    return frame, frame.groupby("query").label.sum()


def test_ndcg_counts_every_product_the_customer_ordered_in_the_ideal():
    frame = pd.DataFrame({"query": [1, 1, 1, 2, 2], "blend_rank": [1, 2, 3, 1, 2], "label": [0, 1, 0, 1, 0]})
    truth = pd.Series({1: 2, 2: 1})  # customer 1 ordered one more product that is no candidate
    got = ranking.mean_ndcg(frame, -frame.blend_rank.to_numpy(float), truth)
    one = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert got == pytest.approx((one + 1.0) / 2)
    reordered = ranking.mean_ndcg(frame, np.array([0.0, 1.0, 0.0, 1.0, 0.0]), truth)  # the hit first
    assert reordered == pytest.approx((1 / (1 + 1 / math.log2(3)) + 1.0) / 2)


def test_a_model_that_beats_the_blend_is_promoted_and_one_that_does_not_is_not():
    tuning = Tuning(learned_ranking=True, ranking_min_leaf=20)
    fitted = ranking.fit(*candidates_frame(300, 10, signal=2.0), tuning)
    assert fitted.promoted and fitted.holdout_ndcg_model > fitted.holdout_ndcg_blend * 1.02
    assert fitted.importances["product_affinity"] > 0.5 and fitted.model.startswith("tree")
    assert fitted.train_customers + fitted.holdout_customers == 300
    noise = ranking.fit(*candidates_frame(300, 10, signal=0.0), replace(tuning, ranking_promotion_margin=0.5))
    assert not noise.promoted and "not promoted" in noise.reason
    nobody = pd.DataFrame(columns=["query", "customer_key", *ranking.FEATURES, "label"])
    assert not ranking.fit(nobody, pd.Series(dtype="int64"), tuning).promoted  # nobody ordered: no model


def test_held_out_customers_are_a_stable_share():
    keys = np.arange(100_000)
    chosen = ranking.held_out(keys, 0.2)
    assert abs(chosen.mean() - 0.2) < 0.01
    assert (ranking.held_out(keys[::-1], 0.2) == chosen[::-1]).all()  # by key, not by position


@pytest.fixture
def shop(nightly, tmp_path):
    return nightly.copy_to(tmp_path, serving=False)


@pytest.mark.parametrize("repeat", [False, True], ids=["discovery", "repeat"])
def test_features_see_nothing_after_the_as_of_time(shop, nightly, repeat):
    as_of = nightly.hour
    tuning = Tuning(learned_ranking=True)
    if repeat:  # purchased products among the candidates: the customer x item re-order signals take values
        tuning = replace(tuning, exclude_purchased=False, weight_repurchase=1.0)
    names = [spec.name for spec in upstream_stages(ranking.FEATURES_STAGE)]
    run_stages(shop, tuning, as_of, names)
    before = table(shop, ranking.FEATURES_STAGE, "customer_key, product_key")
    assert len(before) > 1000 and set(ranking.FEATURES) <= set(before.columns)
    # the re-order signals take real values here, so the comparison below covers them too
    assert (before.customer_reorder_share > 0).any() and (before.customer_order_interval > 0).any()
    if repeat:
        assert (before.due_ratio > 0).any() and (before.orders_since_bought > 0).any()
    for source, column, key in (("orders", "order_timestamp", "order_id"),
                                ("customer_interactions", "interaction_timestamp", "event_id")):
        later = shop.read(  # every event again, a day after the as-of time
            f"SELECT * REPLACE ($later AS {column}, {key} || '-later' AS {key}) FROM {source}",
            inputs=[source], params={"later": as_of + timedelta(days=1)},
        )
        later.to_parquet(Path(shop.asset_dir(source)) / "later.parquet", index=False)
    run_stages(shop, tuning, as_of, names)
    after = table(shop, ranking.FEATURES_STAGE, "customer_key, product_key")
    pd.testing.assert_frame_equal(before, after)


def test_a_promoted_model_ranks_the_candidates_and_leaves_type_evidence_and_variant(definitions, shop, nightly):
    import lightgbm

    stage(definitions, shop, [ranking.FEATURES_STAGE], as_of=nightly.hour, **ON)
    features = table(shop, ranking.FEATURES_STAGE, "customer_key, blend_rank")
    labels = (features.product_key % 3 == 0).astype(int)  # any labels: the test checks how the model is applied
    booster = lightgbm.train(
        {"objective": "lambdarank", "verbose": -1, "num_threads": 1, "min_data_in_leaf": 5, "deterministic": True},
        lightgbm.Dataset(features[list(ranking.FEATURES)].to_numpy(np.float32), label=labels,
                         group=features.groupby("customer_key", sort=False).size().to_numpy()),
        num_boost_round=5,
    )
    fitted = ranking.Fitted(booster.model_to_string(), True, "promoted", 1, 1, 0.2, 0.1, {})
    with shop.session() as con:
        con.register("model", fitted.row(nightly.hour, nightly.hour, 60))
        shop.write(con, ranking.MODEL, "SELECT * FROM model")
    stage(definitions, shop, ["learned_recommendations"], as_of=nightly.hour, **ON)
    learned = table(shop, "learned_recommendations", "customer_key, recommendation_rank")
    blend = table(shop, "product_recommendations", "customer_key, recommendation_rank")
    merged = learned.merge(blend, on=["customer_key", "product_key"], suffixes=("", "_blend"))
    assert len(merged) == len(learned) == len(blend)  # every candidate ranked
    scores = booster.predict(features[list(ranking.FEATURES)].to_numpy(np.float32))
    expected = features.assign(learned=scores).sort_values(
        ["customer_key", "learned", "blend_rank"], ascending=[True, False, True], kind="stable")
    assert learned.product_key.tolist() == expected.product_key.tolist()
    assert merged.recommendation_score.between(0, 1).all()
    assert (merged.recommendation_rank != merged.recommendation_rank_blend).any()  # it really re-ranked
    # the top N: the learned order, the blend's type, evidence and variant
    stage(definitions, shop, ["customer_top_recommendations"], as_of=nightly.hour, **ON)
    top = table(shop, "customer_top_recommendations", "customer_id, recommendation_rank")
    first = merged[merged.recommendation_rank <= 20].sort_values(["customer_id", "recommendation_rank"])
    assert top.product_id.tolist() == first.product_id.tolist()
    assert top.recommendation_type.tolist() == first.recommendation_type.tolist()
    assert top.evidence.tolist() == first.evidence.tolist() and top.variant.tolist() == first.variant.tolist()
    stage(definitions, shop, ["learned_recommendations"], as_of=nightly.hour)  # off: no rows, the blend's order
    assert table(shop, "learned_recommendations", "customer_key").empty


def test_the_model_is_trained_as_of_the_window_and_judged_in_the_ui(definitions, shop, nightly):
    from recopipeline.defs.quality.derived_checks import LEARNED_RANKING_PROMOTED

    result = stage(definitions, shop, [ranking.MODEL], as_of=nightly.hour, ranking_window_days=2,
                   ranking_min_leaf=5, **ON)
    row = table(shop, ranking.MODEL, "trained_as_of").iloc[0]
    assert row.trained_as_of == nightly.hour - timedelta(days=2) * Tuning().ranking_windows
    assert row.labels_until == nightly.hour
    assert row.train_customers > 0 and row.holdout_customers > 0
    assert row.promoted == (row.holdout_ndcg_model >= row.holdout_ndcg_blend * 1.02 and row.holdout_ndcg_model > 0)
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == LEARNED_RANKING_PROMOTED]
    assert check.passed == row.promoted and check.severity.value == "WARN"
    (event,) = [e for e in result.get_asset_materialization_events()
                if e.asset_key.to_user_string() == ranking.MODEL]
    metadata = event.materialization.metadata
    assert metadata["holdout_ndcg@20_model"].value == pytest.approx(row.holdout_ndcg_model)
    assert any(key.startswith("importance/") for key in metadata)
