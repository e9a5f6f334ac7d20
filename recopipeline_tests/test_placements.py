"""The placements besides home, hand-computed: each customer's recently_viewed and buy_it_again lists."""

from __future__ import annotations

from datetime import timedelta

import pytest

from recopipeline.lib.warehouse import Warehouse
from recopipeline_tests.conftest import AS_OF, put, rows, stage, table

DAY = timedelta(days=1)


@pytest.fixture
def viewed_and_bought(warehouse: Warehouse) -> Warehouse:
    put(warehouse, "products", rows("products", [
        {"product_id": p, "product_name": name, "category": "A", "price": 1.0, **extra}
        for p, name, extra in [
            ("P1", "one", {}), ("P2", None, {}), ("P3", "three", {}), ("P4", "four", {"stock_quantity": 0}),
            ("P5", "five", {}),
        ]
    ]))
    put(warehouse, "customers", rows("customers", [{"customer_id": "C1"}, {"customer_id": "C2"}]))
    put(warehouse, "customer_interactions", rows("customer_interactions", [
        {"customer_id": c, "product_id": p, "interaction_type": kind, "interaction_timestamp": at}
        for c, p, kind, at in [
            ("C1", "P1", "view", AS_OF - 14 * DAY),  # half-life 14 days: 0.5
            ("C1", "P1", "cart_add", AS_OF - DAY),  # not a view: P1 was last viewed 14 days ago
            ("C1", "P2", "click", AS_OF - 7 * DAY),  # a click opens the page too: 0.5 ** 0.5
            ("C1", "P3", "view", AS_OF - 28 * DAY),
            ("C1", "P3", "view", AS_OF),  # the last view counts: 1.0
            ("C1", "P4", "view", AS_OF - DAY),  # out of stock: not listed
            ("C1", "P5", "view", AS_OF + DAY),  # after the as-of time
            ("C2", "P5", "purchase", AS_OF - DAY),
        ]
    ]))
    put(warehouse, "orders", rows("orders", [
        {"order_id": o, "customer_id": c, "product_id": p, "order_timestamp": at}
        for o, c, p, at in [
            ("O1", "C2", "P1", AS_OF - 180 * DAY),  # half-life 180 days: 0.5
            ("O2", "C2", "P1", AS_OF - 360 * DAY),  # 0.25: P1 sums 0.75
            ("O3", "C2", "P3", AS_OF - DAY),  # 0.5 ** (1 / 180)
            ("O4", "C2", "P4", AS_OF - DAY),  # out of stock
        ]
    ]))
    return warehouse


def test_recently_viewed_lists_the_last_viewed_available_products_newest_first(definitions, viewed_and_bought):
    stage(definitions, viewed_and_bought, ["customer_segments", "customer_behavior_comprehensive",
                                           "product_repurchase_rates", "customer_placement_recommendations"],
          recency_half_life_days=14.0)
    got = table(viewed_and_bought, "customer_placement_recommendations", "customer_id, placement, recommendation_rank")
    viewed = got[got.placement == "recently_viewed"]
    assert viewed.customer_id.unique().tolist() == ["C1"]
    assert viewed.product_id.tolist() == ["P3", "P2", "P1"]
    assert viewed.product_name.tolist() == ["three", "P2", "one"]  # no name: shown by the id
    assert viewed.recommendation_rank.tolist() == [1, 2, 3]
    assert viewed.recommendation_score.tolist() == pytest.approx([1.0, 0.5 ** 0.5, 0.5])
    assert viewed.evidence.tolist() == [
        f"viewed:{(AS_OF - k * DAY).isoformat()}" for k in (0, 7, 14)
    ]


def test_buy_it_again_ranks_the_ordered_products_by_the_repurchase_score(definitions, viewed_and_bought):
    stage(definitions, viewed_and_bought, ["customer_segments", "customer_behavior_comprehensive",
                                           "product_repurchase_rates", "customer_placement_recommendations"])
    got = table(viewed_and_bought, "customer_placement_recommendations", "customer_id, placement, recommendation_rank")
    again = got[got.placement == "buy_it_again"]
    rates = table(viewed_and_bought, "product_repurchase_rates", "product_id").set_index("product_id")
    p1 = 0.75 * rates.repurchase_factor["P1"]
    p3 = 0.5 ** (1 / 180) * rates.repurchase_factor["P3"]
    expected = sorted([("P1", p1, "bought:2"), ("P3", p3, "bought:1")], key=lambda r: -r[1])
    assert again.customer_id.unique().tolist() == ["C2"]
    assert again.product_id.tolist() == [p for p, _, _ in expected]
    best = max(p1, p3)
    assert again.recommendation_score.tolist() == pytest.approx([s / best for _, s, _ in expected], abs=1e-9)
    assert again.evidence.tolist() == [e for _, _, e in expected]
