"""Behaviour layer, hand-computed: segments, the event view, affinity and category preferences."""

from datetime import timedelta

import pytest

from recopipeline_tests.conftest import AS_OF, put, rows, stage, table


def ago(days: float = 0, hours: float = 0):
    return AS_OF - timedelta(days=days, hours=hours)


@pytest.fixture
def behaviour(warehouse):
    """C1 has a full funnel on P1, heavy purchases of P2 and P3; C2..C5 exist for the segment rules."""
    put(warehouse, "customers", rows("customers", [
        {"customer_id": "C1", "signup_date": ago(300)},
        {"customer_id": "C2", "signup_date": ago(6)},          # new
        {"customer_id": "C3", "signup_date": ago(400)},        # never acted: at_risk
        {"customer_id": "C4", "signup_date": ago(400)},        # 5 orders this year: vip
        {"customer_id": "C5", "signup_date": ago(400)},        # last order 100 days ago: at_risk
    ]))
    put(warehouse, "products", rows("products", [
        {"product_id": "P1", "product_name": "One", "category": "A", "brand": "X", "price": 10.0},
        {"product_id": "P2", "product_name": "Two", "category": "A", "brand": "X", "price": 11.0},
        {"product_id": "P3", "product_name": "Three", "category": "B", "brand": "Y", "price": 20.0},
    ]))
    events = [
        {"customer_id": "C1", "product_id": "P1", "interaction_type": "view", "interaction_timestamp": ago(hours=2)},
        {"customer_id": "C1", "product_id": "P1", "interaction_type": "click", "interaction_timestamp": ago(3)},
        {"customer_id": "C1", "product_id": "P1", "interaction_type": "cart_add", "interaction_timestamp": ago(10)},
        {"customer_id": "C1", "product_id": "P1", "interaction_type": "purchase", "interaction_timestamp": ago(40)},
        {"customer_id": "C1", "product_id": "P1", "interaction_type": "cart_remove", "interaction_timestamp": ago(hours=1)},
        # after the as-of time: ignored, so a backfill reproduces the past
        {"customer_id": "C1", "product_id": "P1", "interaction_type": "purchase", "interaction_timestamp": ago(hours=-1)},
    ]
    events += [{"customer_id": "C1", "product_id": "P2", "interaction_type": "purchase",
                "interaction_timestamp": ago(2, hours=i)} for i in range(7)]
    events += [{"customer_id": "C1", "product_id": "P3", "interaction_type": "purchase",
                "interaction_timestamp": ago(2, hours=i)} for i in range(3)]
    events += [{"customer_id": "C2", "product_id": "P3", "interaction_type": "view", "interaction_timestamp": ago(1)}]
    put(warehouse, "customer_interactions", rows("customer_interactions", events))
    # P1 of C1 sits in two orders and two carts: joined naively this would repeat every P1 event four times
    put(warehouse, "orders", rows("orders", [
        {"order_id": "O1", "customer_id": "C1", "product_id": "P1", "order_timestamp": ago(40)},
        {"order_id": "O2", "customer_id": "C1", "product_id": "P1", "order_timestamp": ago(35)},
        *[{"order_id": f"V{i}", "customer_id": "C4", "product_id": "P3", "order_timestamp": ago(10 + 50 * i)}
          for i in range(5)],
        {"order_id": "R1", "customer_id": "C5", "product_id": "P3", "order_timestamp": ago(100)},
    ]))
    put(warehouse, "cart_activity", rows("cart_activity", [
        {"cart_id": "K1", "customer_id": "C1", "product_id": "P1", "added_at": ago(10)},
        {"cart_id": "K2", "customer_id": "C1", "product_id": "P1", "added_at": ago(9), "cart_status": "checked_out"},
    ]))
    return warehouse


BEHAVIOUR = ["customer_segments", "customer_behavior_comprehensive", "customer_product_affinity",
             "customer_category_preferences"]


def test_segments_follow_the_documented_rules(definitions, behaviour):
    stage(definitions, behaviour, ["customer_segments"])
    segments = table(behaviour, "customer_segments", "customer_id")
    assert dict(zip(segments.customer_id, segments.customer_segment)) == {
        "C1": "returning", "C2": "new", "C3": "at_risk", "C4": "vip", "C5": "at_risk",
    }
    c4 = segments.set_index("customer_id").loc["C4"]
    assert c4.order_count == 5 and c4.recent_order_count == 5


def test_each_interaction_counts_once_and_none_after_the_as_of_time(definitions, behaviour):
    stage(definitions, behaviour, BEHAVIOUR[:2])
    pairs = table(behaviour, "customer_behavior_comprehensive", "customer_id, product_id").set_index(
        ["customer_id", "product_id"])
    assert pairs.event_count.sum() == 16  # 17 events, one after the as-of time
    p1 = pairs.loc[("C1", "P1")]
    assert (p1.view_count, p1.click_count, p1.cart_add_count, p1.cart_remove_count, p1.purchase_count,
            p1.event_count) == (1, 1, 1, 1, 1, 5)  # two orders and two carts of P1 repeat none of its events
    assert (p1.customer_segment, p1.category) == ("returning", "A")
    # recency: view 1.0 + cart_remove 1.0 + click 0.8 + cart_add 0.5 + purchase 0.2
    assert (float(p1.recency_sum), float(p1.purchase_recency)) == (3.5, 0.2)
    assert float(p1.weighted_score) == pytest.approx(7.9)  # view 1 x 1.0 + click 3 x 0.8 + ... (see below)
    assert p1.last_purchase_at == ago(40)


def test_affinity_weights_events_by_type_and_recency(definitions, behaviour):
    stage(definitions, behaviour, BEHAVIOUR[:3])
    affinity = table(behaviour, "customer_product_affinity", "customer_id, product_id").set_index(
        ["customer_id", "product_id"])
    p1 = affinity.loc[("C1", "P1")]
    # view 1 x 1.0 + click 3 x 0.8 + cart_add 5 x 0.5 + purchase 10 x 0.2 + cart_remove 0 x 1.0
    assert p1.weighted_affinity_score == pytest.approx(7.9)
    assert p1.total_interaction_score == 19
    assert (p1.view_count, p1.click_count, p1.cart_add_count, p1.cart_remove_count, p1.purchase_count) == (1, 1, 1, 1, 1)
    assert p1.affinity_category == "low_affinity"
    assert affinity.loc[("C1", "P2")].weighted_affinity_score == pytest.approx(56.0)  # 7 x 10 x 0.8
    assert affinity.loc[("C1", "P2")].affinity_category == "high_affinity"
    assert affinity.loc[("C1", "P3")].affinity_category == "medium_affinity"  # 3 x 10 x 0.8 = 24
    assert affinity.loc[("C2", "P3")].affinity_category == "no_affinity"  # 1 x 1 x 0.8
    assert p1.days_since_interaction == 0


def test_exponential_recency_halves_each_half_life(definitions, behaviour):
    stage(definitions, behaviour, BEHAVIOUR[:3], recency_mode="exponential", recency_half_life_days=2.0)
    affinity = table(behaviour, "customer_product_affinity", "customer_id, product_id").set_index(
        ["customer_id", "product_id"])
    # 7 purchases aged 2 days + 0..6 hours: 10 x sum(0.5 ** ((48 + h) / 48))
    expected = sum(10 * 0.5 ** ((48 + h) / 48) for h in range(7))
    assert affinity.loc[("C1", "P2")].weighted_affinity_score == pytest.approx(expected, abs=1e-5)


def test_cart_remove_weight_is_configurable(definitions, behaviour):
    stage(definitions, behaviour, BEHAVIOUR[:3], weight_cart_remove=-2.0)
    affinity = table(behaviour, "customer_product_affinity", "customer_id, product_id").set_index(
        ["customer_id", "product_id"])
    assert affinity.loc[("C1", "P1")].weighted_affinity_score == pytest.approx(5.9)


def test_category_preferences_rank_by_weighted_interest(definitions, behaviour):
    stage(definitions, behaviour, BEHAVIOUR)
    prefs = table(behaviour, "customer_category_preferences", "customer_id, category_rank")
    c1 = prefs[prefs.customer_id == "C1"]
    assert list(c1.category) == ["A", "B"] and list(c1.category_rank) == [1, 2]
    assert c1.weighted_category_score.tolist() == pytest.approx([63.9, 24.0])
    assert c1.category_purchases.tolist() == [8, 3]
    assert c1.category_revenue.tolist() == pytest.approx([20.0, 0.0])  # two P1 order lines of 10.0


def test_category_rank_ties_break_by_purchases_then_name(definitions, warehouse):
    put(warehouse, "customers", rows("customers", [{"customer_id": "C1"}]))
    put(warehouse, "products", rows("products", [
        {"product_id": p, "product_name": p, "category": c, "price": 1.0}
        for p, c in [("P1", "Zeta"), ("P2", "Alpha"), ("P3", "Mid")]
    ]))
    put(warehouse, "customer_interactions", rows("customer_interactions", [
        # Zeta: one purchase (10 x 1.0); Alpha: ten views (10 x 1.0); Mid: ten views too
        {"customer_id": "C1", "product_id": "P1", "interaction_type": "purchase", "interaction_timestamp": ago(hours=1)},
        *[{"customer_id": "C1", "product_id": p, "interaction_type": "view", "interaction_timestamp": ago(hours=1)}
          for p in ["P2"] * 10 + ["P3"] * 10],
    ]))
    put(warehouse, "orders", rows("orders", []))
    put(warehouse, "cart_activity", rows("cart_activity", []))
    stage(definitions, warehouse, BEHAVIOUR)
    prefs = table(warehouse, "customer_category_preferences", "category_rank")
    assert list(prefs.category) == ["Zeta", "Alpha", "Mid"]


def test_repurchase_rates_smooth_repeat_buyers_and_lift_recent_sellers(definitions, warehouse):
    put(warehouse, "orders", rows("orders", [
        {"order_id": "O1", "customer_id": "C1", "product_id": "P1", "order_timestamp": ago(40)},
        {"order_id": "O2", "customer_id": "C1", "product_id": "P1", "order_timestamp": ago(35)},
        {"order_id": "O3", "customer_id": "C2", "product_id": "P1", "order_timestamp": ago(20)},
        # two lines of P2 in one order are one order: C1 did not buy P2 again
        {"order_id": "O2", "customer_id": "C1", "product_id": "P2", "order_timestamp": ago(35)},
        {"order_id": "O2", "customer_id": "C1", "product_id": "P2", "order_timestamp": ago(35)},
        {"order_id": "O4", "customer_id": "C2", "product_id": "P3", "order_timestamp": ago(5)},
        {"order_id": "O5", "customer_id": "C3", "product_id": "P3", "order_timestamp": ago(3)},
        {"order_id": "O6", "customer_id": "C3", "product_id": "P3", "order_timestamp": ago(1)},
        {"order_id": "O7", "customer_id": "C4", "product_id": "P4", "order_timestamp": ago(2)},
        # after the as-of time: ignored (else C1 would be a repeat buyer of P2)
        {"order_id": "O9", "customer_id": "C1", "product_id": "P2", "order_timestamp": ago(hours=-1)},
    ]))
    stage(definitions, warehouse, ["product_repurchase_rates"])
    found = table(warehouse, "product_repurchase_rates", "product_id").set_index("product_id")
    # repeat_rate = (repeat buyers + 1) / (buyers + 2); recent_trend = sqrt(orders in 14 days / the most, 3)
    assert found.buyers.to_dict() == {"P1": 2, "P2": 1, "P3": 2, "P4": 1}
    assert found.repeat_buyers.to_dict() == {"P1": 1, "P2": 0, "P3": 1, "P4": 0}
    assert found.repeat_rate.to_dict() == pytest.approx({"P1": 0.5, "P2": 1 / 3, "P3": 0.5, "P4": 1 / 3})
    assert found.recent_orders.to_dict() == {"P1": 0, "P2": 0, "P3": 3, "P4": 1}
    assert found.recent_trend.to_dict() == pytest.approx({"P1": 0, "P2": 0, "P3": 1, "P4": (1 / 3) ** 0.5})
    # repurchase_factor = repeat_rate ^ 0.25 * (1 + 2 * recent_trend) with the default tuning
    assert found.repurchase_factor.to_dict() == pytest.approx({
        "P1": 0.5 ** 0.25, "P2": (1 / 3) ** 0.25, "P3": 0.5 ** 0.25 * 3,
        "P4": (1 / 3) ** 0.25 * (1 + 2 * (1 / 3) ** 0.5)}, abs=1e-8)
