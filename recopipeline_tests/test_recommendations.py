"""The blend, hand-computed: normalisation, weights, exclusions, dedupe, tie-break and cold start."""

from datetime import timedelta

import pandas as pd
import pytest

from recopipeline.lib.tuning import STRATEGIES
from recopipeline_tests.conftest import unranked, AS_OF, put, rows, stage, table

TOTAL_WEIGHT = 1.0 + 1.0 + 10.0 + 1.0 + 0.6 + 0.0 + 0.1  # default strategy weights (ease: 10)


def frame(columns: str, *records) -> pd.DataFrame:
    return pd.DataFrame(records, columns=columns.split())


@pytest.fixture
def candidates(warehouse):
    """C1 bought P1 and viewed P2; C2 is a new customer with no history."""
    put(warehouse, "products", rows("products", [
        {"product_id": p, "product_name": f"name {p}", "category": c, "price": 1.0, **extra}
        for p, c, extra in [
            ("P1", "A", {}), ("P2", "A", {}), ("P3", "A", {}), ("P4", "A", {}), ("P5", "C", {}),
            ("P6", "C", {"stock_quantity": 0}), ("P7", "C", {"is_active": False}), ("P8", "B", {}), ("P9", "C", {}),
        ]
    ]))
    put(warehouse, "orders", rows("orders", [
        {"order_id": "O1", "customer_id": "C1", "product_id": "P1", "order_timestamp": AS_OF},
    ]))
    put(warehouse, "merchandising_rules", rows("merchandising_rules", []))
    put(warehouse, "customer_segments", frame("customer_id customer_segment", ("C1", "returning"), ("C2", "new")))
    put(warehouse, "customer_product_affinity", frame(
        "customer_id product_id weighted_affinity_score purchase_count weighted_purchase_count",
        ("C1", "P1", 10.0, 1, 1.0), ("C1", "P2", 5.0, 0, None)))
    put(warehouse, "customer_category_preferences", frame(
        "customer_id category weighted_category_score category_rank", ("C1", "A", 15.0, 1)))
    put(warehouse, "product_popularity", frame(
        "segment product_id category popularity_score popularity_rank category_rank",
        ("all", "P8", "B", 20.0, 1, 1), ("all", "P3", "A", 8.0, 2, 1), ("all", "P4", "A", 4.0, 3, 2),
        ("returning", "P8", "B", 20.0, 1, 1), ("returning", "P3", "A", 8.0, 2, 1),
        ("new", "P8", "B", 0.0, 1, 1), ("new", "P3", "A", 0.0, 2, 1)))
    put(warehouse, "product_similarity", frame(
        "product_id_1 product_id_2 attribute_similarity_score similarity_rank",
        ("P1", "P3", 0.82, 1), ("P1", "P4", 0.58, 2), ("P2", "P3", 0.64, 1), ("P2", "P1", 0.64, 2)))
    put(warehouse, "complementary_products", frame(
        "product_id_1 product_id_2 complementary_score complementary_rank",
        ("P1", "P3", 0.3, 1), ("P1", "P7", 0.9, 2)))
    put(warehouse, "collaborative_item_similarity", frame(
        "product_id_1 product_id_2 cf_similarity cf_rank",
        ("P1", "P2", 0.9, 1), ("P1", "P5", 0.5, 2), ("P1", "P9", 0.5, 3), ("P2", "P6", 0.4, 1)))
    put(warehouse, "product_repurchase_rates", frame(
        "product_id buyers repeat_buyers repeat_rate recent_orders recent_trend repurchase_factor",
        ("P1", 3, 1, 0.4, 2, 0.5, 0.8), ("P3", 4, 2, 0.5, 5, 1.0, 1.5)))
    # no EASE weights from anything C1 bought: the hand-computed blend below has no ease candidates
    put(warehouse, "ease_item_similarity", frame(
        "product_id_1 product_id_2 ease_weight ease_rank", ("P0", "P3", 0.5, 1)))
    # trending (off by default: weight_trending 0): C1 bought P1, P6 is out of stock
    put(warehouse, "product_trending", frame(
        "product_id recent_score baseline_daily_score trending_score trending_rank",
        ("P1", 70.0, 10.0, 4.0, 1), ("P5", 50.0, 10.0, 3.0, 2), ("P6", 30.0, 10.0, 2.0, 3),
        ("P8", 20.0, 10.0, 1.5, 4)))
    return warehouse


def recommendations(store, customer: str) -> pd.DataFrame:
    found = table(store, "product_recommendations", "customer_id, recommendation_rank")
    return found[found.customer_id == customer].set_index("product_id")


def test_blend_normalises_weights_and_ranks(definitions, candidates):
    stage(definitions, candidates, ["product_recommendations"])
    c1 = recommendations(candidates, "C1")
    # affinity_similar: P3 = 10 x 0.82 + 5 x 0.64 = 11.4 (-> 1.0), P4 = 10 x 0.58 = 5.8 (-> 5.8 / 11.4)
    # collaborative: P5 = P9 = 10 x 0.5 (-> 1.0 each); P2 is the customer's own product, P6 is out of stock
    # complementary: P3 = 10 x 0.3 (-> 1.0); P7 is inactive
    # category_preference (category A, popularity 8 and 4): P3 -> 1.0, P4 -> 0.5
    # popular (segment returning): P8 -> 1.0, P3 -> (8 + 49e-6) / (20 + 50e-6)
    popular_p3 = (8 + 49e-6) / (20 + 50e-6)
    expected = {
        "P3": (1.0 + 1.0 + 0.6 * 1.0 + 0.1 * popular_p3) / TOTAL_WEIGHT,
        "P5": 1.0 / TOTAL_WEIGHT,
        "P9": 1.0 / TOTAL_WEIGHT,
        "P4": (5.8 / 11.4 + 0.6 * 0.5) / TOTAL_WEIGHT,
        "P8": 0.1 / TOTAL_WEIGHT,
    }
    assert list(c1.index) == ["P3", "P5", "P9", "P4", "P8"]  # P5 and P9 tie: product id decides
    assert c1.recommendation_score.to_dict() == pytest.approx(expected, abs=1e-8)
    assert list(c1.recommendation_rank) == [1, 2, 3, 4, 5]
    assert c1.recommendation_type.to_dict() == {
        "P3": "affinity_similar",  # ties complementary at 1.0; the earlier strategy wins
        "P5": "collaborative", "P9": "collaborative", "P4": "affinity_similar", "P8": "popular"}
    assert c1.loc["P3"].evidence == "P1,P2"
    assert c1.loc["P3"].strategies == "affinity_similar,category_preference,complementary,popular"
    assert c1.loc["P8"].evidence == "popular:returning"


def test_each_strategys_normalised_score_is_a_column(definitions, candidates):
    # two strategies: affinity_similar (weight 1) and category_preference (0.6); P2 is also similar to P9
    put(candidates, "product_similarity", frame(
        "product_id_1 product_id_2 attribute_similarity_score similarity_rank",
        ("P1", "P3", 0.82, 1), ("P1", "P4", 0.58, 2), ("P2", "P3", 0.64, 1), ("P2", "P1", 0.64, 2),
        ("P2", "P9", 0.32, 3)))
    put(candidates, "customer_segments", frame("customer_id customer_segment", ("C1", "returning")))  # C1 alone
    weights = {f"weight_{s}": 0.0 for s in STRATEGIES} | {"weight_affinity_similar": 1.0,
                                                            "weight_category_preference": 0.6}
    stage(definitions, candidates, ["product_recommendations"], **weights)
    c1 = recommendations(candidates, "C1")
    # affinity_similar: P3 = 10 x 0.82 + 5 x 0.64 = 11.4 (the best), P4 = 10 x 0.58, P9 = 5 x 0.32;
    # category_preference (category A, popularity 8 and 4): P3 -> 1.0, P4 -> 0.5; P9 is in category C
    assert list(c1.index) == ["P3", "P4", "P9"]
    assert c1.affinity_similar_score.to_dict() == pytest.approx(
        {"P3": 1.0, "P4": 5.8 / 11.4, "P9": 1.6 / 11.4}, abs=1e-12)
    assert c1.category_preference_score.to_dict() == {"P3": 1.0, "P4": 0.5, "P9": 0.0}
    # the other strategies have no weight: 0.0, though collaborative would propose P5 and P9
    others = [f"{s}_score" for s in STRATEGIES if s not in ("affinity_similar", "category_preference")]
    assert (c1[others] == 0.0).all().all() and len(others) == len(STRATEGIES) - 2
    # the blended score is their weighted sum over the total weight
    blended = (1.0 * c1.affinity_similar_score + 0.6 * c1.category_preference_score) / 1.6
    assert c1.recommendation_score.to_dict() == pytest.approx(blended.to_dict(), abs=1e-9)
    assert c1.recommendation_score.to_dict() == pytest.approx(
        {"P3": 1.0, "P4": (5.8 / 11.4 + 0.6 * 0.5) / 1.6, "P9": (1.6 / 11.4) / 1.6}, abs=1e-8)


def test_purchased_unavailable_and_duplicate_products_are_excluded(definitions, candidates):
    stage(definitions, candidates, ["product_recommendations"])
    found = table(candidates, "product_recommendations", "customer_id, recommendation_rank")
    assert "P1" not in set(found[found.customer_id == "C1"].product_id)  # bought
    assert not {"P6", "P7"} & set(found.product_id)  # out of stock, inactive
    assert not found.duplicated(["customer_id", "product_id"]).any()


def test_purchased_products_can_be_kept(definitions, candidates):
    stage(definitions, candidates, ["product_recommendations"], exclude_purchased=False)
    c1 = recommendations(candidates, "C1")
    # P1 is similar to the seed P2: 5 x 0.64 = 3.2 of the best 11.4
    assert c1.loc["P1"].recommendation_score == pytest.approx((3.2 / 11.4) / TOTAL_WEIGHT, abs=1e-8)


def test_buy_it_again_weighs_own_orders_by_age_and_the_product_factor(definitions, candidates):
    put(candidates, "orders", rows("orders", [
        {"order_id": "O1", "customer_id": "C1", "product_id": "P1", "order_timestamp": AS_OF},
        {"order_id": "O2", "customer_id": "C1", "product_id": "P1", "order_timestamp": AS_OF - timedelta(days=180)},
        # two lines of P3 in one order count once
        {"order_id": "O2", "customer_id": "C1", "product_id": "P3", "order_timestamp": AS_OF - timedelta(days=180)},
        {"order_id": "O2", "customer_id": "C1", "product_id": "P3", "order_timestamp": AS_OF - timedelta(days=180)},
    ]))
    weights = {f"weight_{s}": 0.0 for s in STRATEGIES} | {"weight_repurchase": 1.0, "weight_popular": 1.0}
    stage(definitions, candidates, ["product_recommendations"], exclude_purchased=False, **weights)
    c1 = recommendations(candidates, "C1")
    # half-life 180 days: P1 = (1 + 0.5) x 0.8 = 1.2 (-> 1.0), P3 = 0.5 x 1.5 = 0.75 (-> 0.625);
    # popular (segment returning): P8 -> 1.0, P3 -> (8 + 49e-6) / (20 + 50e-6); two weights of 1
    popular_p3 = (8 + 49e-6) / (20 + 50e-6)
    assert c1.recommendation_score.to_dict() == pytest.approx(
        {"P1": 1.0 / 2, "P8": 1.0 / 2, "P3": (0.625 + popular_p3) / 2}, abs=1e-8)
    assert list(c1.index) == ["P3", "P1", "P8"]  # P1 and P8 tie: product id decides
    assert c1.recommendation_type.to_dict() == {"P1": "repurchase", "P8": "popular", "P3": "repurchase"}
    assert c1.loc["P1"].evidence == "bought:2" and c1.loc["P3"].evidence == "bought:1"


def test_a_customer_without_history_gets_the_segment_fallback(definitions, candidates):
    stage(definitions, candidates, ["product_recommendations"])
    c2 = recommendations(candidates, "C2")
    assert list(c2.index) == ["P8", "P3"]
    assert set(c2.recommendation_type) == {"popular"} and set(c2.evidence) == {"popular:new"}
    assert c2.loc["P3"].recommendation_score == pytest.approx(0.1 * (49e-6 / 50e-6) / TOTAL_WEIGHT, abs=1e-8)


def test_top_recommendations_cut_at_n_with_display_fields(definitions, candidates):
    stage(definitions, candidates, ["product_recommendations"], top_n=2)
    unranked(candidates)
    stage(definitions, candidates, ["customer_top_recommendations"], top_n=2)
    top = table(candidates, "customer_top_recommendations", "customer_id, recommendation_rank")
    assert list(zip(top.customer_id, top.product_id)) == [("C1", "P3"), ("C1", "P5"), ("C2", "P8"), ("C2", "P3")]
    assert top.loc[0, "product_name"] == "name P3"


def test_ease_evidence_names_the_strongest_bought_products_only(definitions, candidates):
    # C1 bought P1 and P2; both point to P4 through EASE (0.5 and 0.3), and P2 also to P9 (0.2)
    put(candidates, "customer_product_affinity", frame(
        "customer_id product_id weighted_affinity_score purchase_count weighted_purchase_count",
        ("C1", "P1", 10.0, 1, 1.0), ("C1", "P2", 5.0, 1, 1.0)))
    put(candidates, "ease_item_similarity", frame(
        "product_id_1 product_id_2 ease_weight ease_rank", ("P1", "P4", 0.5, 1), ("P2", "P4", 0.3, 1),
        ("P2", "P9", 0.2, 2)))
    weights = {f"weight_{s}": 0.0 for s in STRATEGIES} | {"weight_ease": 1.0, "weight_popular": 1.0}
    stage(definitions, candidates, ["product_recommendations"], seeds_per_customer=1, **weights)
    c1 = recommendations(candidates, "C1")
    # EASE sums over every bought product: P4 = 0.5 + 0.3 = 0.8 (-> 1.0), P9 = 0.2 (-> 0.25); two weights of 1
    assert c1.loc[["P4", "P9"]].recommendation_score.to_dict() == pytest.approx({"P4": 0.5, "P9": 0.125}, abs=1e-8)
    # at most seeds_per_customer source products, strongest first
    assert c1.loc[["P4", "P9"]].evidence.to_dict() == {"P4": "P1", "P9": "P2"}


TRENDING_TOTAL = TOTAL_WEIGHT + 2.0


def test_trending_products_enter_the_blend_normalised_by_the_customers_best(definitions, candidates):
    stage(definitions, candidates, ["product_recommendations"], weight_trending=2.0)
    c1 = recommendations(candidates, "C1")
    # trending for C1: P1 is bought and P6 out of stock, so the best is P5 = 3.0 (-> 1.0), P8 = 1.5 (-> 0.5);
    # the other strategies as in test_blend_normalises_weights_and_ranks
    popular_p3 = (8 + 49e-6) / (20 + 50e-6)
    expected = {
        "P5": (1.0 + 2.0 * 1.0) / TRENDING_TOTAL,
        "P3": (1.0 + 1.0 + 0.6 * 1.0 + 0.1 * popular_p3) / TRENDING_TOTAL,
        "P8": (0.1 + 2.0 * 0.5) / TRENDING_TOTAL,
        "P9": 1.0 / TRENDING_TOTAL,
        "P4": (5.8 / 11.4 + 0.6 * 0.5) / TRENDING_TOTAL,
    }
    assert list(c1.index) == ["P5", "P3", "P8", "P9", "P4"]
    assert c1.recommendation_score.to_dict() == pytest.approx(expected, abs=1e-8)
    assert c1.recommendation_type.to_dict() == {
        "P5": "trending", "P3": "affinity_similar", "P8": "trending", "P9": "collaborative", "P4": "affinity_similar"}
    assert c1.loc["P5"].strategies == "collaborative,trending" and c1.loc["P8"].strategies == "popular,trending"
    assert c1.loc["P5"].evidence == "trending" and c1.loc["P8"].evidence == "trending"
    assert c1.loc["P3"].evidence == "P1,P2"  # the item-to-item evidence is unchanged
    # C2 has no history: its best trending product is P1 = 4.0, so P5 -> 0.75 and P8 -> 0.375
    c2 = recommendations(candidates, "C2")
    assert list(c2.index) == ["P1", "P5", "P8", "P3"]
    assert c2.recommendation_score.to_dict() == pytest.approx({
        "P1": 2.0 / TRENDING_TOTAL, "P5": 2.0 * 0.75 / TRENDING_TOTAL,
        "P8": (0.1 + 2.0 * 0.375) / TRENDING_TOTAL, "P3": 0.1 * (49e-6 / 50e-6) / TRENDING_TOTAL}, abs=1e-8)
    assert c2.recommendation_type.to_dict() == {"P1": "trending", "P5": "trending", "P8": "trending", "P3": "popular"}
    assert c2.loc["P8"].strategies == "popular,trending" and c2.loc["P8"].evidence == "trending"


def test_trending_takes_the_first_trending_products_and_keeps_purchases_when_asked(definitions, candidates):
    stage(definitions, candidates, ["product_recommendations"], weight_trending=2.0, trending_products=2,
          exclude_purchased=False)
    c1 = recommendations(candidates, "C1")
    trending = c1[c1.strategies.str.contains("trending")]
    # the first two of the list; C1's purchase P1 may come back, and is now C1's best: P5 -> 0.75
    assert sorted(trending.index) == ["P1", "P5"]
    assert c1.loc["P5"].recommendation_score == pytest.approx((1.0 + 2.0 * 0.75) / TRENDING_TOTAL, abs=1e-8)


def test_trending_at_weight_zero_leaves_the_rows_as_they_were(definitions, candidates):
    stage(definitions, candidates, ["product_recommendations"])
    with_list = table(candidates, "product_recommendations", "customer_id, recommendation_rank")
    assert "trending" not in set(with_list.strategies.str.split(",").sum())
    empty = frame("product_id recent_score baseline_daily_score trending_score trending_rank")
    put(candidates, "product_trending", empty.astype({"product_id": str, "trending_rank": int}).astype(
        {c: float for c in ("recent_score", "baseline_daily_score", "trending_score")}))
    stage(definitions, candidates, ["product_recommendations"])
    pd.testing.assert_frame_equal(table(candidates, "product_recommendations", "customer_id, recommendation_rank"),
                                  with_list)
