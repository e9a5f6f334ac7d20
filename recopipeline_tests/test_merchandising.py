"""Merchandising rules, hand-computed: exclude, boost, bury and pin, their validity windows, segments and
priorities, applied to a customer's candidates before the top N; and the rules' own ingest and checks."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from recopipeline.lib.contract import SOURCES
from recopipeline.lib.warehouse import Warehouse
from recopipeline_tests.conftest import AS_OF, put, rows, stage, table
from recopipeline_tests.test_validation import HEADERS, ingest, quarantine, write_sources

RULES = SOURCES["merchandising_rules"]
HOUR = timedelta(hours=1)


def rules(*records: dict) -> pd.DataFrame:
    """Rules for the home placement; unnamed columns are NULL."""
    full = [{"placement": "home", **record} for record in records]
    frame = pd.DataFrame(full, columns=RULES.column_names)
    types = {"VARCHAR": "string", "DOUBLE": "float64", "INTEGER": "Int32", "TIMESTAMP": "datetime64[us]"}
    return frame.astype({c.name: types[c.type] for c in RULES.columns})


def candidates(*records) -> pd.DataFrame:
    """product_recommendations rows: (customer, product, rank, score)."""
    return pd.DataFrame(
        [
            {"customer_id": c, "product_id": p, "recommendation_rank": rank, "recommendation_score": score,
             "recommendation_type": "affinity_similar", "strategies": "affinity_similar",
             "evidence": f"seed:{p}", "variant": "control"}
            for c, p, rank, score in records
        ]
    )


@pytest.fixture
def shop(warehouse: Warehouse) -> Warehouse:
    """C1 (returning) and C2 (vip) with blended candidates; C3 (new) whom no rule touches."""
    put(warehouse, "products", rows("products", [
        {"product_id": p, "product_name": f"name {p}", "category": c, "brand": b, "price": price, **extra}
        for p, c, b, price, extra in [
            ("P1", "A", None, 5.0, {}), ("P2", "A", None, 6.0, {}), ("P3", "B", None, 7.0, {}),
            ("P4", "B", None, 8.0, {}), ("P5", "C", "X", 9.0, {}), ("P6", "C", "X", 9.0, {"stock_quantity": 0}),
            ("P8", "D", None, 20.0, {}), ("P9", "D", None, 30.0, {}),
        ]
    ]))
    put(warehouse, "customer_segments", pd.DataFrame(
        [("C1", "returning"), ("C2", "vip"), ("C3", "new")], columns=["customer_id", "customer_segment"]))
    put(warehouse, "orders", rows("orders", [
        {"order_id": "O1", "customer_id": "C2", "product_id": "P9", "order_timestamp": AS_OF - 10 * HOUR},
    ]))
    put(warehouse, "customer_product_affinity", pd.DataFrame(
        [("C2", "P9", 3.0, 1, 1.0)],
        columns=["customer_id", "product_id", "weighted_affinity_score", "purchase_count", "weighted_purchase_count"],
    ))
    put(warehouse, "product_recommendations", candidates(
        ("C1", "P1", 1, 0.9), ("C1", "P2", 2, 0.8), ("C1", "P3", 3, 0.7), ("C1", "P4", 4, 0.6), ("C1", "P5", 5, 0.5),
        ("C2", "P1", 1, 0.9), ("C2", "P3", 2, 0.5),
        ("C3", "P4", 1, 0.4), ("C3", "P3", 2, 0.3),
    ))
    return warehouse


def top(store: Warehouse) -> dict[str, list[tuple]]:
    found = table(store, "customer_top_recommendations", "customer_id, recommendation_rank")
    return {
        customer: [
            (r.product_id, r.recommendation_rank, r.recommendation_type, round(r.recommendation_score, 9), r.evidence)
            for r in group.itertuples()
        ]
        for customer, group in found.groupby("customer_id")
    }


def test_each_rule_kind_does_what_it_says_within_its_window(definitions, shop):
    put(shop, "merchandising_rules", rules(
        {"rule_id": "ex_a", "action": "exclude", "category": "A"},
        {"rule_id": "boost_x", "action": "boost", "brand": "X", "value": 2.0},
        # in force from exactly the as-of time
        {"rule_id": "bury_p3", "action": "bury", "product_ids": "P3", "value": 0.5, "valid_from": AS_OF},
        {"rule_id": "pin_p8", "action": "pin", "product_ids": "P8", "value": 2, "customer_segment": "vip"},
        # ended exactly at the as-of time, and not begun yet: neither applies
        {"rule_id": "ended", "action": "exclude", "product_ids": "P4", "valid_to": AS_OF},
        {"rule_id": "later", "action": "boost", "product_ids": "P4", "value": 5.0, "valid_from": AS_OF + HOUR},
        # another placement's rule would not apply either; a price range that matches nothing changes nothing
        {"rule_id": "dear", "action": "exclude", "min_price": 100.0},
    ))
    stage(definitions, shop, ["customer_top_recommendations"], top_n=3)
    got = top(shop)
    # C1: P1, P2 excluded (category A); P5 0.5 x 2 = 1.0 (capped at 1); P3 0.7 x 0.5 = 0.35; P4 untouched 0.6
    assert got["C1"] == [
        ("P5", 1, "affinity_similar", 1.0, "seed:P5|rule:boost_x"),
        ("P4", 2, "affinity_similar", 0.6, "seed:P4"),
        ("P3", 3, "affinity_similar", 0.35, "seed:P3|rule:bury_p3"),
    ]
    # C2 (vip): P1 excluded, P3 buried to 0.25, P8 pinned at position 2 though it was no candidate
    assert got["C2"] == [
        ("P3", 1, "affinity_similar", 0.25, "seed:P3|rule:bury_p3"),
        ("P8", 2, "pinned", 0.0, "rule:pin_p8"),
    ]
    # C3: the rules on P4 are not in force; P3's bury (every segment) lowers its score, not its place
    assert got["C3"] == [
        ("P4", 1, "affinity_similar", 0.4, "seed:P4"),
        ("P3", 2, "affinity_similar", 0.15, "seed:P3|rule:bury_p3"),
    ]


def test_without_rules_every_list_is_the_blends_top_n(definitions, shop):
    put(shop, "merchandising_rules", rules())
    stage(definitions, shop, ["customer_top_recommendations"], top_n=2)
    got = top(shop)
    assert got["C1"] == [("P1", 1, "affinity_similar", 0.9, "seed:P1"), ("P2", 2, "affinity_similar", 0.8, "seed:P2")]
    assert [row[0] for row in got["C2"]] == ["P1", "P3"] and [row[0] for row in got["C3"]] == ["P4", "P3"]


def test_pins_compete_by_position_then_priority_and_respect_purchases_and_exclusions(definitions, shop):
    put(shop, "merchandising_rules", rules(
        {"rule_id": "pin_low", "action": "pin", "product_ids": "P8", "value": 1, "priority": 1},
        {"rule_id": "pin_high", "action": "pin", "product_ids": "P4", "value": 1, "priority": 5},
        # P3 pinned twice: the stronger pin (priority 2 over 0) places it, at position 4
        {"rule_id": "pin_p3_weak", "action": "pin", "product_ids": "P3", "value": 1},
        {"rule_id": "pin_p3_strong", "action": "pin", "product_ids": "P3", "value": 4, "priority": 2},
        # C2 bought P9: never shown to C2; unavailable P6 cannot be pinned; excluded P5 is not pinned
        {"rule_id": "pin_bought", "action": "pin", "product_ids": "P9", "value": 2},
        {"rule_id": "pin_gone", "action": "pin", "product_ids": "P6", "value": 1},
        {"rule_id": "pin_ex", "action": "pin", "product_ids": "P5", "value": 1},
        {"rule_id": "no_p5", "action": "exclude", "product_ids": "P5"},
        # placed beyond the top 6: not applied, P2 keeps its own place
        {"rule_id": "pin_far", "action": "pin", "product_ids": "P2", "value": 9},
    ))
    stage(definitions, shop, ["customer_top_recommendations"], top_n=6)
    got = top(shop)
    # pins by (position, priority desc, rule id): P4 (1, 5) -> 1, P8 (1, 1) -> 2, P9 (2, 0) -> 3, P3 (4, 2) -> 4;
    # C1's free candidates P1, P2 fill positions 5 and 6 (P5 is excluded)
    assert [(p, rank, evidence) for p, rank, _, _, evidence in got["C1"]] == [
        ("P4", 1, "seed:P4|rule:pin_high"), ("P8", 2, "rule:pin_low"), ("P9", 3, "rule:pin_bought"),
        ("P3", 4, "seed:P3|rule:pin_p3_strong"), ("P1", 5, "seed:P1"), ("P2", 6, "seed:P2"),
    ]
    # C2 bought P9: its pin is not honoured for C2, and the positions close up
    # (slots 1, 2 and 4; P1 takes the first free position, 3)
    assert [p for p, *_ in got["C2"]] == ["P4", "P8", "P1", "P3"]


def test_rules_are_validated_and_quarantined_with_their_reason(definitions, tmp_path):
    future = "2099-01-01 00:00:00"
    folder = write_sources(tmp_path / "input", {"merchandising_rules": [
        f"R2,pin,home,,P1,,,,,,1,{future},,",  # a window in the future is valid
        "R3,boost,home,,P1,,,,,,0.5,,,",
        "R4,shuffle,home,,P1,,,,,,,,,",
        "R5,pin,home,,P1|P2,,,,,,1,,,",
        "R6,exclude,home,,,,,,,,,,,",
        "R7,exclude,home,,,kitchen,,,,,,2026-05-01,2026-04-01,",
        "R8,exclude,checkout,,P1,,,,,,,,,",
        "R9,exclude,home,gold,P1,,,,,,,,,",
        "R10,bury,home,,,,,10,5,,0.5,,,",
        "R11,exclude,home,,,,,,,0,,,,",
        "R12,pin,home,,P1,,,,,,3e9,,,",
        "R13,boost,home,,P1,,,,,,nan,,,",
        "R14,exclude,cart,vip,P1,,,,,,,,,",  # a segment for a placement answered at request time
        "R15,exclude,cart,,P1,,,,,,,,,",
    ]})
    store = Warehouse(str(tmp_path / "warehouse"))
    assert ingest(definitions, store, folder, selection=["customers", "products", "merchandising_rules"]).success
    held = quarantine(store)
    held = held[held.source == "merchandising_rules"]
    reasons = dict(zip(held.raw_row.str.extract(r'"rule_id":"(R\d+)"')[0], held.reason))
    assert reasons == {
        "R3": "invalid_rule", "R4": "unknown_action", "R5": "invalid_rule", "R6": "invalid_rule",
        "R7": "invalid_rule", "R8": "unknown_placement", "R9": "unknown_customer_segment", "R10": "invalid_rule",
        "R11": "non_positive_new_within_days", "R12": "invalid_rule", "R13": "invalid_rule",
    }
    details = dict(zip(held.raw_row.str.extract(r'"rule_id":"(R\d+)"')[0], held.detail))
    assert "a boost needs a value > 1" in details["R3"]
    assert "exactly one product" in details["R5"]
    assert "no condition on products" in details["R6"]
    assert "is not after valid_from" in details["R7"]
    assert "min_price 10.0 is above max_price 5.0" in details["R10"]
    assert "from 1 to 1000" in details["R12"] and "finite" in details["R13"]
    kept = store.read("SELECT rule_id FROM merchandising_rules ORDER BY rule_id", inputs=["merchandising_rules"])
    assert kept.rule_id.tolist() == ["R1", "R14", "R15", "R2"]


def test_an_unhonourable_pin_fails_its_check_and_an_idle_rule_warns(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", {"merchandising_rules": [
        "R2,pin,home,,P2,,,,,,1,,,",  # P2 is inactive
        "R3,pin,home,,P77,,,,,,1,,2020-01-01,",  # unknown, but expired: no matter
        "R4,exclude,home,,,garden,,,,,,,,",  # no garden products
    ]})
    store = Warehouse(str(tmp_path / "warehouse"))
    result = ingest(definitions, store, folder, selection=["customers", "products", "merchandising_rules"])
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()
              if e.asset_key.path == ["merchandising_rules"]}
    # a pin of a sold-out product is routine: it warns, and the rules are still published
    assert result.success and result.asset_materializations_for_node("merchandising_rules")
    assert not checks["pins_can_be_honoured"].passed
    assert checks["pins_can_be_honoured"].severity.value == "WARN"
    assert checks["pins_can_be_honoured"].metadata["violations"].value == 1
    assert not checks["rules_match_products"].passed
    assert checks["rules_match_products"].severity.value == "WARN"
    assert checks["quarantine_share"].passed and checks["unique_key"].passed


def test_a_location_without_rules_has_none(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", skip=("merchandising_rules",))
    assert not (folder / "merchandising_rules.csv").exists() and HEADERS["merchandising_rules"].startswith("rule_id")
    store = Warehouse(str(tmp_path / "warehouse"))
    assert ingest(definitions, store, folder, selection=["customers", "products", "merchandising_rules"]).success
    assert len(store.read("SELECT * FROM merchandising_rules", inputs=["merchandising_rules"])) == 0


def test_a_rule_that_ends_or_begins_in_an_hour_is_applied_by_that_hours_refresh(definitions, nightly, tmp_path):
    from recopipeline.defs.incremental.assets import HOURLY_CUSTOMER_REFRESH
    from recopipeline.lib.hourly import hour_key
    from recopipeline.lib.refresh import refresh_hour
    from recopipeline.lib.tuning import Tuning

    store = nightly.copy_to(tmp_path, serving=False)
    hour = nightly.hour
    # the most recommended product: excluded from 10 minutes into the hour; an available product pinned first
    # to everyone until half past
    (excluded, pinned) = store.read(
        """
        SELECT (SELECT product_id FROM customer_top_recommendations GROUP BY product_id
                ORDER BY count(*) DESC, product_id LIMIT 1),
               (SELECT product_id FROM products WHERE is_active AND coalesce(stock_quantity, 1) > 0
                ORDER BY product_id DESC LIMIT 1)
        """,
        inputs=["customer_top_recommendations", "products"],
    ).iloc[0]
    put(store, "merchandising_rules", rules(
        {"rule_id": "sale", "action": "pin", "product_ids": pinned, "value": 1, "valid_to": hour + 30 * HOUR / 60},
        {"rule_id": "recall", "action": "exclude", "product_ids": excluded, "valid_from": hour + 10 * HOUR / 60},
    ))
    stage(definitions, store, ["customer_top_recommendations"], as_of=hour)
    nightly_top = table(store, "customer_top_recommendations", "customer_id, recommendation_rank")
    firsts = nightly_top[nightly_top.recommendation_rank == 1]
    assert (firsts.product_id == pinned).mean() > 0.9 and (nightly_top.product_id == excluded).any()

    refresh_hour(store, HOURLY_CUSTOMER_REFRESH, hour, Tuning(), as_of=hour + HOUR)
    path = store.partition_path(HOURLY_CUSTOMER_REFRESH, hour_key(hour))
    refreshed = store.read(f"SELECT * FROM read_parquet('{path}') ORDER BY customer_id, recommendation_rank")
    # the pin's end reaches every customer it applied to, not only those active in the hour
    assert set(refreshed.customer_id) >= set(firsts[firsts.product_id == pinned].customer_id)
    assert not refreshed.evidence.fillna("").str.contains("rule:sale").any()
    assert excluded not in set(refreshed.product_id)
    # a customer whose list only the pin changed gets the blend's list back
    candidates = table(store, "product_recommendations", "customer_id, recommendation_rank")
    quiet = sorted(set(refreshed.customer_id) - set(candidates[candidates.product_id == excluded].customer_id))[0]
    got = refreshed[refreshed.customer_id == quiet].product_id.tolist()
    expected = candidates[(candidates.customer_id == quiet) & (candidates.recommendation_rank <= 20)]
    assert got == expected.product_id.tolist()


@pytest.mark.parametrize(("caps", "expected"), [
    # C1's candidates by score: P1 A, P2 A, P3 B, P4 B, P5 C/X. One per category: A, B, C first, then the rest
    ({"diversity_max_per_category": 1}, ["P1", "P3", "P5", "P2", "P4"]),
    ({"diversity_max_per_category": 2}, ["P1", "P2", "P3", "P4", "P5"]),
    # only P5 has a brand: a brand cap of 1 moves nothing
    ({"diversity_max_per_brand": 1}, ["P1", "P2", "P3", "P4", "P5"]),
])
def test_the_diversity_cap_defers_what_is_beyond_it_and_keeps_the_order_otherwise(definitions, shop, caps, expected):
    put(shop, "merchandising_rules", rules())
    stage(definitions, shop, ["customer_top_recommendations"], top_n=5, **caps)
    got = top(shop)
    assert [row[0] for row in got["C1"]] == expected
    assert [row[3] for row in got["C1"]] == [{"P1": 0.9, "P2": 0.8, "P3": 0.7, "P4": 0.6, "P5": 0.5}[p] for p in expected]


def test_the_diversity_cap_counts_after_the_rules_and_leaves_pins_alone(definitions, shop):
    put(shop, "products", rows("products", [
        {"product_id": p, "product_name": p, "category": c, "brand": b, "price": 5.0}
        for p, c, b in [("P1", "A", "Y"), ("P2", "A", "Y"), ("P3", "B", "Y"), ("P4", "B", None), ("P5", "C", "X"),
                        ("P6", "C", None), ("P8", "A", "Y"), ("P9", "D", None)]
    ]))
    put(shop, "merchandising_rules", rules(
        {"rule_id": "pin_p8", "action": "pin", "product_ids": "P8", "value": 1},
        {"rule_id": "boost_p4", "action": "boost", "product_ids": "P4", "value": 3.0},
    ))
    stage(definitions, shop, ["customer_top_recommendations"], top_n=5, diversity_max_per_brand=2)
    # after the boost: P4 1.0 (no brand), P1 Y, P2 Y, P3 Y (third Y: deferred), P5 X; P8 pinned first (also Y)
    assert [row[0] for row in top(shop)["C1"]] == ["P8", "P4", "P1", "P2", "P5"]


def test_trending_is_the_smoothed_growth_of_the_last_day_over_the_week_before(definitions, warehouse):
    day = timedelta(days=1)
    put(warehouse, "products", rows("products", [
        {"product_id": p, "product_name": p, "category": "A", "price": 1.0, **extra}
        for p, extra in [("PA", {}), ("PB", {}), ("PC", {}), ("PD", {"stock_quantity": 0}), ("PE", {})]
    ]))
    put(warehouse, "customers", rows("customers", [{"customer_id": "C1"}]))
    events = (
        [("PA", "view", AS_OF - HOUR * k) for k in (1, 2, 3)]  # 3 in the last day, nothing before
        + [("PB", "purchase", AS_OF - HOUR * k) for k in (1, 5)]  # 20 in the last day
        + [("PB", "view", AS_OF - day - HOUR * k) for k in range(1, 15)]  # 14 over the week before: 2 a day
        + [("PB", "view", AS_OF - day)]  # exactly 24 hours before: the week before's, 15 / 7 a day
        + [("PC", "view", AS_OF - HOUR)]  # 1 against 10 a day: falling
        + [("PC", "view", AS_OF - day - HOUR * k) for k in range(1, 71)]
        + [("PD", "purchase", AS_OF - HOUR)]  # out of stock
        + [("PE", "purchase", AS_OF - 9 * day), ("PE", "view", AS_OF + HOUR)]  # outside the window
    )
    put(warehouse, "customer_interactions", rows("customer_interactions", [
        {"customer_id": "C1", "product_id": p, "interaction_type": kind, "interaction_timestamp": at}
        for p, kind, at in events
    ]))
    stage(definitions, warehouse, ["product_trending"])
    got = table(warehouse, "product_trending", "trending_rank")
    assert got.product_id.tolist() == ["PB", "PA"] and got.trending_rank.tolist() == [1, 2]
    pb, pa = got.iloc[0], got.iloc[1]
    assert pb.recent_score == 20 and pb.baseline_daily_score == pytest.approx(15 / 7)
    assert pb.trending_score == pytest.approx((20 + 10) / (15 / 7 + 10))
    assert pa.trending_score == pytest.approx((3 + 10) / 10) and pa.baseline_daily_score == 0


def test_a_product_that_sells_out_leaves_every_list_in_the_next_hour_and_the_list_is_refilled(
    definitions, nightly, tmp_path
):
    from recopipeline.defs.incremental.assets import HOURLY_CUSTOMER_REFRESH
    from recopipeline.lib.hourly import hour_key
    from recopipeline.lib.refresh import refresh_hour
    from recopipeline.lib.tuning import Tuning

    store = nightly.copy_to(tmp_path, serving=False)
    hour = nightly.hour
    top_n = table(store, "customer_top_recommendations", "customer_id, recommendation_rank")
    sold_out = top_n.product_id.value_counts().index[0]  # the most recommended product
    showing = set(top_n[top_n.product_id == sold_out].customer_id)
    products = table(store, "products", "product_id")
    products.loc[products.product_id == sold_out, "stock_quantity"] = 0
    put(store, "products", products.drop(columns=["product_key"]).astype({"stock_quantity": "Int32"}))

    refresh_hour(store, HOURLY_CUSTOMER_REFRESH, hour, Tuning(), as_of=hour + HOUR)
    path = store.partition_path(HOURLY_CUSTOMER_REFRESH, hour_key(hour))
    refreshed = store.read(f"SELECT * FROM read_parquet('{path}') ORDER BY customer_id, recommendation_rank")
    assert len(showing) > 5 and showing <= set(refreshed.customer_id)
    assert sold_out not in set(refreshed.product_id)
    sizes = refreshed[refreshed.customer_id.isin(showing)].groupby("customer_id").size()
    assert (sizes == 20).all()  # refilled from the next candidates
