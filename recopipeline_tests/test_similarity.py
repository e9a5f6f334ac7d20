"""Similarity layer, hand-computed: attribute similarity, bought together, complements, collaborative."""

import math
from datetime import timedelta

import pandas as pd
import pytest

from recopipeline_tests.conftest import AS_OF, put, rows, stage, table


def pairs(frame: pd.DataFrame, score: str) -> dict[tuple[str, str], float]:
    return {(a, b): round(s, 6) for a, b, s in zip(frame.product_id_1, frame.product_id_2, frame[score])}


@pytest.fixture
def catalogue(warehouse):
    put(warehouse, "products", rows("products", [
        {"product_id": "A1", "product_name": "a1", "category": "A", "brand": "X", "price": 100.0},
        {"product_id": "A2", "product_name": "a2", "category": "A", "brand": "X", "price": 110.0},
        {"product_id": "A3", "product_name": "a3", "category": "A", "brand": "Y", "price": 105.0},
        {"product_id": "A4", "product_name": "a4", "category": "A", "brand": "X", "price": 200.0},
        {"product_id": "A5", "product_name": "a5", "category": "A", "brand": "Z", "price": 300.0},
        {"product_id": "A6", "product_name": "a6", "category": "A", "brand": "W", "price": 125.0},
        {"product_id": "A7", "product_name": "a7", "category": "A", "brand": None, "price": 500.0},
        {"product_id": "A8", "product_name": "a8", "category": "A", "brand": None, "price": 1000.0},
        {"product_id": "B1", "product_name": "b1", "category": "B", "brand": "X", "price": 100.0},
    ]))
    return warehouse


def test_attribute_similarity_scores_both_directions(definitions, catalogue):
    stage(definitions, catalogue, ["product_similarity"])
    found = pairs(table(catalogue, "product_similarity", "product_id_1, product_id_2"), "attribute_similarity_score")
    # 0.4 category + 0.24 same brand + 0.18 price within 20%; A1/A6 differ by exactly 20% (not within),
    # A1/B1 share brand and price but not the category (0.42 < 0.5), null brands never match.
    expected = {("A1", "A2"): 0.82, ("A1", "A3"): 0.58, ("A1", "A4"): 0.64, ("A2", "A3"): 0.58,
                ("A2", "A4"): 0.64, ("A2", "A6"): 0.58, ("A3", "A6"): 0.58}
    expected |= {(b, a): s for (a, b), s in expected.items()}
    assert found == expected


def test_similarity_keeps_top_k_with_a_deterministic_tie_break(definitions, catalogue):
    stage(definitions, catalogue, ["product_similarity"], similarity_top_k=2)
    found = table(catalogue, "product_similarity", "product_id_1, similarity_rank")
    a3 = found[found.product_id_1 == "A3"]
    # A1, A2 and A6 all score 0.58 for A3; the closest prices win (A1 and A2, 5 apart), then the id
    assert list(a3.product_id_2) == ["A1", "A2"] and list(a3.similarity_rank) == [1, 2]
    assert found.groupby("product_id_1").size().max() == 2


def day(n: int):
    return AS_OF - timedelta(days=30 - n)


def basket_orders(extra=()):
    lines = [("O1", "C1", 1, ["P1", "P2", "P3"]), ("O2", "C2", 1, ["P1", "P2"]), ("O3", "C1", 5, ["P1", "P3"]),
             ("O4", "C2", 3, ["P2"]), ("O5", "C3", 1, ["P1", "P2"]), ("O6", "C4", 2, ["P4", "P5"]), *extra]
    return rows("orders", [
        {"order_id": o, "customer_id": c, "product_id": p, "order_timestamp": day(d)}
        for o, c, d, products in lines for p in products
    ])


def test_bought_together_uses_a_correct_jaccard(definitions, warehouse):
    # O7 has more lines than max_basket_lines and is left out of every count
    put(warehouse, "orders", basket_orders(extra=[("O7", "C5", 2, ["P1", "P2", "P3", "P4"])]))
    stage(definitions, warehouse, ["products_bought_together"], min_support=2, max_basket_lines=3)
    found = table(warehouse, "products_bought_together", "product_id_1, product_id_2").set_index(
        ["product_id_1", "product_id_2"])
    assert sorted(found.index) == [("P1", "P2"), ("P1", "P3"), ("P2", "P1"), ("P3", "P1")]
    # P1 in 4 orders, P2 in 4, P3 in 2; together: P1+P2 in 3, P1+P3 in 2 (P2+P3 in 1 < min_support)
    assert found.loc[("P1", "P2")].co_purchase_count == 3
    assert found.loc[("P1", "P2")].co_purchase_similarity == pytest.approx(3 / (4 + 4 - 3))
    assert found.loc[("P1", "P3")].co_purchase_similarity == pytest.approx(2 / (4 + 2 - 2))
    assert found.loc[("P1", "P3")].confidence == pytest.approx(0.5)
    assert found.loc[("P3", "P1")].confidence == pytest.approx(1.0)


def test_complementary_scores_co_purchase_and_later_purchase_per_customer(definitions, warehouse):
    put(warehouse, "orders", basket_orders())
    stage(definitions, warehouse, ["products_bought_together", "complementary_products"], min_support=2)
    found = table(warehouse, "complementary_products", "product_id_1, product_id_2").set_index(
        ["product_id_1", "product_id_2"])
    # buyers: P1 by C1, C2, C3; P2 by C1, C2, C3; P3 by C1 only.
    # later purchases: C2 bought P2 (day 3) after P1 (day 1); C1 bought P1 and P3 again on day 5.
    assert found.sequential_purchase_count.to_dict() == {
        ("P1", "P2"): 1, ("P1", "P3"): 1, ("P2", "P1"): 1, ("P3", "P1"): 1}
    assert found.complementary_score.to_dict() == pytest.approx({
        ("P1", "P2"): 0.6 * 0.6 + 0.4 / 3,
        ("P2", "P1"): 0.6 * 0.6 + 0.4 / 3,
        ("P1", "P3"): 0.6 * 0.5 + 0.4 / 3,
        ("P3", "P1"): 0.6 * 0.5 + 0.4 * 1.0,
    })


def test_collaborative_similarity_is_cosine_over_damped_affinities(definitions, warehouse):
    e = math.e
    put(warehouse, "customer_product_affinity", pd.DataFrame({
        "customer_id": ["C1", "C1", "C2", "C2", "C2", "C3", "C3"],
        "product_id": ["P1", "P2", "P1", "P2", "P3", "P2", "P3"],
        "weighted_affinity_score": [e - 1, e - 1, e * e - 1, e - 1, e - 1, e - 1, e - 1],
    }))
    stage(definitions, warehouse, ["collaborative_item_similarity"])
    found = table(warehouse, "collaborative_item_similarity", "product_id_1, cf_rank")
    # ln(1 + a) vectors over (C1, C2, C3): P1 = (1, 2, 0), P2 = (1, 1, 1), P3 = (0, 1, 1);
    # P1 and P3 share one customer only, below cf_min_common_customers = 2
    assert pairs(found, "cf_similarity") == {
        ("P1", "P2"): round(3 / math.sqrt(15), 6), ("P2", "P1"): round(3 / math.sqrt(15), 6),
        ("P2", "P3"): round(2 / math.sqrt(6), 6), ("P3", "P2"): round(2 / math.sqrt(6), 6),
    }
    assert list(found[found.product_id_1 == "P2"].product_id_2) == ["P3", "P1"]
