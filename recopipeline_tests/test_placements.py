"""The placements besides home: each customer's recently_viewed and buy_it_again lists (hand-computed), the other
placements' rules applied when answering, and every placement answered from the published version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from recopipeline.lib.warehouse import Warehouse
from recopipeline.serving.database import ServingDatabase
from recopipeline.serving.items import Item
from recopipeline.serving.read import Recommender
from recopipeline.serving.rules import Rule, apply_rules
from recopipeline_tests.conftest import AS_OF, put, rows, stage, table
from recopipeline_tests.test_merchandising import rules

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


# ---- the other placements' rules, applied when answering ------------------------------------------------------
NOW = datetime(2026, 10, 1, 12)


def item(product_id: str, score: float, kind: str = "recently_viewed") -> Item:
    return Item(product_id, f"name {product_id}", kind, score, f"viewed:{product_id}")


def rule(rule_id: str, product_id: str, action: str, value: float | None = None, priority: int = 0,
         valid_from: datetime | None = None, valid_to: datetime | None = None) -> Rule:
    return Rule(rule_id, product_id, f"name {product_id}", action, value, priority, valid_from, valid_to)


LIST = (item("A", 0.9), item("B", 0.8), item("C", 0.5), item("D", 0.4))


def ids(items) -> list[str]:
    return [i.product_id for i in items]


def test_exclude_boost_and_bury_rerank_the_list_with_the_rule_in_the_evidence():
    got = apply_rules(LIST, (
        rule("R1", "B", "exclude"),
        rule("R2", "C", "boost", 1.5), rule("R3", "C", "boost", 2.0),  # 0.5 x 1.5 x 2 = 1.5: capped at 1
        rule("R4", "A", "bury", 0.5),  # 0.45
    ), NOW, 50)
    assert ids(got) == ["C", "A", "D"]
    assert [i.score for i in got] == pytest.approx([1.0, 0.45, 0.4])
    assert got[0].evidence == "viewed:C|rule:R2|rule:R3" and got[1].evidence == "viewed:A|rule:R4"
    assert got[2] == LIST[3]  # untouched


def test_pins_take_their_position_by_priority_and_a_taken_position_passes_on():
    got = apply_rules(LIST, (
        rule("R1", "X", "pin", 1, priority=1),  # not listed: type pinned, score 0
        rule("R2", "D", "pin", 1),  # position 1 taken by the higher priority: the next free one, 2
        rule("R3", "B", "pin", 9, priority=5), rule("R4", "B", "pin", 2),  # the stronger pin of B counts: 9
        rule("R5", "Y", "pin", 60),  # beyond the 50 an answer can hold: not applied
        rule("R6", "Z", "pin", 3), rule("R7", "Z", "exclude"),  # an excluded product is never pinned
    ), NOW, 50)
    assert ids(got) == ["X", "D", "A", "C", "B"]  # B's position 9 is beyond the list: shown after it
    assert (got[0].recommendation_type, got[0].score, got[0].evidence) == ("pinned", 0.0, "rule:R1")
    assert (got[1].score, got[1].evidence) == (0.4, "viewed:D|rule:R2")
    assert got[4].evidence == "viewed:B|rule:R3"


def test_a_pinned_product_shows_as_before_its_boost_and_never_a_product_the_answer_leaves_out():
    got = apply_rules(LIST, (rule("R1", "D", "boost", 2.0), rule("R2", "D", "pin", 1)), NOW, 50)
    assert (got[0].product_id, got[0].score, got[0].evidence) == ("D", 0.4, "viewed:D|rule:R2")  # as the SQL does
    got = apply_rules(LIST, (rule("R1", "A", "pin", 1), rule("R2", "X", "pin", 2)), NOW, 50, never=frozenset({"A", "X"}))
    assert ids(got) == ["B", "C", "D"]  # the viewed product or a cart's is never pinned back


def test_a_rule_applies_from_valid_from_until_just_before_valid_to():
    window = (rule("R1", "A", "exclude", valid_from=NOW, valid_to=NOW + timedelta(hours=2)),)
    assert ids(apply_rules(LIST, window, NOW - timedelta(microseconds=1), 50))[0] == "A"
    assert "A" not in ids(apply_rules(LIST, window, NOW, 50))
    assert "A" not in ids(apply_rules(LIST, window, NOW + timedelta(hours=2) - timedelta(microseconds=1), 50))
    assert ids(apply_rules(LIST, window, NOW + timedelta(hours=2), 50))[0] == "A"  # expired: applies no more


# ---- every placement, answered from the published version ------------------------------------------------------
@pytest.fixture(scope="module")
def published(definitions, nightly, tmp_path_factory):
    """The nightly base republished with a rule per answered placement (windows around the present)."""
    root = tmp_path_factory.mktemp("placements")
    store = nightly.copy_to(root)
    resources = nightly.resources(store)
    lists = nightly.store.read(
        "SELECT * FROM customer_placement_recommendations ORDER BY customer_id, placement, recommendation_rank",
        inputs=["customer_placement_recommendations"],
    )
    viewer = lists[lists.placement == "recently_viewed"].customer_id.value_counts().index[0]
    viewed = lists[(lists.customer_id == viewer) & (lists.placement == "recently_viewed")]
    trending = table(nightly.store, "product_trending", "trending_rank")
    cold = nightly.store.read(
        "SELECT product_id FROM product_popularity JOIN product_keys USING (product_key) "
        "WHERE segment = 'all' ORDER BY popularity_rank LIMIT 1", inputs=["product_popularity", "product_keys"])
    now = datetime.now(UTC).replace(tzinfo=None)
    first_viewed, second_viewed = viewed.product_id.iloc[0], viewed.product_id.iloc[1]
    segments = table(nightly.store, "customer_segments", "customer_id")
    own = segments.set_index("customer_id").customer_segment[viewer]
    other = next(s for s in ("new", "returning", "vip", "at_risk") if s != own)
    put(store, "merchandising_rules", rules(
        {"rule_id": "RV1", "action": "exclude", "placement": "recently_viewed", "product_ids": first_viewed},
        {"rule_id": "RV2", "action": "exclude", "placement": "recently_viewed", "product_ids": second_viewed,
         "valid_to": now - timedelta(hours=1)},  # ended: not even published
        {"rule_id": "RV3", "action": "exclude", "placement": "recently_viewed", "product_ids": second_viewed,
         "valid_from": now + timedelta(days=1)},  # not yet
        {"rule_id": "RV4", "action": "exclude", "placement": "recently_viewed", "customer_segment": own,
         "product_ids": viewed.product_id.iloc[2]},  # the viewer's segment: applies
        {"rule_id": "RV5", "action": "exclude", "placement": "recently_viewed", "customer_segment": other,
         "product_ids": viewed.product_id.iloc[3]},  # another segment: does not
        {"rule_id": "T1", "action": "pin", "placement": "trending", "product_ids": trending.product_id.iloc[-1],
         "value": 1.0},
        {"rule_id": "H1", "action": "exclude", "placement": "home", "product_ids": first_viewed},
        {"rule_id": "H2", "action": "exclude", "placement": "home", "product_ids": cold.product_id.iloc[0]},
    ))
    result = dg.materialize(list(definitions.assets), selection=["published_recommendations"], resources=resources,
                            tags=nightly.tags)
    assert result.success
    recommender = Recommender(ServingDatabase(resources["serving"].url), cache_ttl=0)
    yield {"recommender": recommender, "lists": lists, "viewer": viewer, "trending": trending,
           "cold": cold.product_id.iloc[0]}
    recommender.db.dispose()


def test_recently_viewed_and_buy_it_again_serve_the_customers_lists_with_their_rules(published):
    recommender, lists, viewer = published["recommender"], published["lists"], published["viewer"]
    answer = recommender.recommend(viewer, placement="recently_viewed", limit=50)
    viewed = lists[(lists.customer_id == viewer) & (lists.placement == "recently_viewed")]
    assert answer["placement"] == "recently_viewed" and answer["recommendation_id"]
    kept = [p for k, p in enumerate(viewed.product_id) if k not in (0, 2)]  # RV1 for everyone, RV4 for the segment
    assert [r["product_id"] for r in answer["recommendations"]] == kept
    assert {r["recommendation_type"] for r in answer["recommendations"]} == {"recently_viewed"}
    buyer = lists[lists.placement == "buy_it_again"].customer_id.iloc[0]
    again = lists[(lists.customer_id == buyer) & (lists.placement == "buy_it_again")]
    answer = recommender.recommend(buyer, placement="buy_it_again", limit=50)
    assert [r["product_id"] for r in answer["recommendations"]] == again.product_id.tolist()
    assert [r["evidence"] for r in answer["recommendations"]] == again.evidence.tolist()


def test_the_trending_placement_serves_the_trending_list_with_its_pin(published):
    recommender, trending = published["recommender"], published["trending"]
    answer = recommender.recommend("C00001", placement="trending", limit=50)
    last = trending.product_id.iloc[-1]
    assert [r["product_id"] for r in answer["recommendations"]] == [last, *trending.product_id.iloc[:-1]]
    assert answer["recommendations"][0]["evidence"].endswith("rule:T1")
    listed = recommender.trending("C00001", limit=50)  # get_trending_products: the same list, the same rules
    assert [r["product_id"] for r in listed] == [r["product_id"] for r in answer["recommendations"]]
    assert [r["rank"] for r in listed] == list(range(1, len(listed) + 1))


def test_the_cold_start_list_gets_the_home_rules_without_a_segment(published):
    answer = published["recommender"].recommend("someone-new", limit=50)
    assert answer["cold_start"] and answer["recommendations"]
    assert published["cold"] not in [r["product_id"] for r in answer["recommendations"]]


def test_a_placement_is_inferred_or_checked_against_what_it_needs(published):
    recommender = published["recommender"]
    assert recommender.recommend("C00001")["placement"] == "home"
    product = published["trending"].product_id.iloc[0]
    assert recommender.recommend("C00001", product_id=product)["placement"] == "product_page"
    assert recommender.recommend("C00001", cart=[product])["placement"] == "cart"
    for arguments, message in [
        ({"placement": "checkout"}, "placement must be one of"),
        ({"placement": "product_page"}, "needs the viewed product"),
        ({"placement": "cart"}, "needs the cart"),
        ({"placement": "recently_viewed", "product_id": product}, "takes no product_id or cart"),
    ]:
        with pytest.raises(ValueError, match=message):
            recommender.recommend("C00001", **arguments)


def test_a_click_on_an_answer_is_recorded_as_its_impression_showed_it(published):
    from recopipeline.serving.feedback import record_feedback, record_impressions

    recommender = published["recommender"]
    product = published["trending"].product_id.iloc[0]
    answer = recommender.recommend("C00001", product_id=product, limit=50)
    record_impressions(recommender.db, answer)
    shown = answer["recommendations"][-1]
    row = record_feedback(recommender.db, "C00001", shown["product_id"], "click",
                          recommendation_id=answer["recommendation_id"])
    assert (row["placement"], row["recommendation_type"], row["rank"], row["variant"]) == (
        "product_page", shown["recommendation_type"], shown["rank"], answer["variant"])
