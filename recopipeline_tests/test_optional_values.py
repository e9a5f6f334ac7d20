"""Unknown catalogue values through the stages, hand-computed: a NULL stock counts as in stock, a NULL name is shown
as the product id, a NULL price matches no price band."""

from __future__ import annotations

import pandas as pd

from recopipeline.defs.publish.assets import INPUTS as PUBLISHED_INPUTS
from recopipeline.defs.quality import derived_checks as derived
from recopipeline.defs.quality import results
from recopipeline.lib.keys import dictionary_relations
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import load_sql, run
from recopipeline_tests.conftest import unranked, AS_OF, put, rows, stage, table
from recopipeline_tests.test_recommendations import TOTAL_WEIGHT, candidates, recommendations  # noqa: F401


def frame(columns: str, *records) -> pd.DataFrame:
    return pd.DataFrame(records, columns=columns.split())


def catalogue(records: list[dict], unknown: dict[str, list[str]]) -> pd.DataFrame:
    """Contract-shaped products where `unknown` names, per column, the products whose value is NULL."""
    products = rows("products", records).astype({"stock_quantity": "Int32", "price": "Float64"})
    for column, ids in unknown.items():
        products.loc[products.product_id.isin(ids), column] = pd.NA
    return products


def test_unknown_stock_is_recommended_and_an_unknown_name_is_shown_as_the_id(definitions, candidates):  # noqa: F811
    # the blend of test_recommendations, but P6 (out of stock there) has no stock, name or price on record
    products = table(candidates, "products", "product_id").astype({"stock_quantity": "Int32", "price": "Float64"})
    products.loc[products.product_id == "P6", ["stock_quantity", "product_name", "price"]] = pd.NA
    put(candidates, "products", products)
    stage(definitions, candidates, ["product_recommendations"])
    unranked(candidates)
    stage(definitions, candidates, ["customer_top_recommendations"])
    c1 = recommendations(candidates, "C1")
    # collaborative for C1: P5 = P9 = 10 x 0.5 (the best), P6 = 5 x 0.4 (seed P2) -> 2 / 5
    assert c1.loc["P6", "recommendation_type"] == "collaborative"
    assert abs(c1.loc["P6", "recommendation_score"] - round(0.4 / TOTAL_WEIGHT, 9)) < 1e-9
    assert "P7" not in c1.index  # inactive stays out
    top = table(candidates, "customer_top_recommendations", "customer_id, recommendation_rank")
    p6 = top[(top.customer_id == "C1") & (top.product_id == "P6")].iloc[0]
    assert p6.product_name == "P6" and pd.isna(p6.price)
    assert top[top.product_id == "P3"].product_name.iloc[0] == "name P3"


def test_popular_lists_count_unknown_stock_as_in_stock(definitions, warehouse):
    put(warehouse, "products", catalogue(
        [{"product_id": p, "product_name": p, "category": "A", "price": 1.0, **extra}
         for p, extra in [("P1", {}), ("P2", {"stock_quantity": 0}), ("P3", {"stock_quantity": 5})]],
        {"stock_quantity": ["P1"]},
    ))
    put(warehouse, "customer_behavior_comprehensive", frame(
        "customer_id customer_segment product_id weighted_score last_purchase_at",
        ("C1", "returning", "P1", 1.0, pd.NaT),  # a view now: 1 x 1.0
        ("C1", "returning", "P2", 10.0, AS_OF),  # a purchase now: 10 x 1.0
        ("C1", "returning", "P3", 1.5, pd.NaT),  # a click at recency 0.5: 3 x 0.5
    ))
    stage(definitions, warehouse, ["product_popularity"])  # only_available_products (blocking) passes
    popular = table(warehouse, "product_popularity", "segment, popularity_rank")
    overall = popular[popular.segment == "all"]
    # P3: 3 x 0.5 = 1.5, P1: 1 x 1.0 = 1.0 (stock unknown); P2 is out of stock
    assert overall[["product_id", "popularity_score"]].values.tolist() == [["P3", 1.5], ["P1", 1.0]]


def test_only_available_products_accepts_unknown_stock_but_not_zero(warehouse):
    put(warehouse, "products", catalogue(
        [{"product_id": p, "product_name": p, "category": "A", "price": 1.0, **extra}
         for p, extra in [("P1", {}), ("P2", {"stock_quantity": 0}), ("P3", {"is_active": False})]],
        {"stock_quantity": ["P1", "P3"]},
    ))
    put(warehouse, "product_popularity", frame(
        "segment product_id popularity_score popularity_rank", ("all", "P1", 2.0, 1), ("all", "P2", 1.0, 2),
        ("all", "P3", 0.5, 3)))
    (rule,) = [i for i in derived.INVARIANTS["product_popularity"] if i.check == derived.ONLY_AVAILABLE_PRODUCTS]
    with warehouse.session(["product_popularity", "products"]) as con:
        outcome = results.violations(con, rule.check, rule.sql, rule.description, dictionary_relations(warehouse))
    # P2 is out of stock, P3 is inactive (its unknown stock does not help); P1's unknown stock is in stock
    assert outcome.metadata["violations"].value == 2
    assert "P2" in outcome.metadata["examples"].value and "P3" in outcome.metadata["examples"].value
    assert "| P1 " not in outcome.metadata["examples"].value


def test_an_unknown_price_matches_no_price_band(definitions, warehouse):
    put(warehouse, "products", catalogue([
        {"product_id": "A1", "product_name": "a1", "category": "A", "brand": "X", "price": 100.0},
        {"product_id": "A2", "product_name": "a2", "category": "A", "brand": "X", "price": 100.0},
        {"product_id": "A3", "product_name": "a3", "category": "A", "brand": None, "price": 100.0},
        {"product_id": "A4", "product_name": "a4", "category": "A", "brand": None, "price": 100.0},
    ], {"price": ["A1", "A4"]}))
    stage(definitions, warehouse, ["product_similarity"])
    found = table(warehouse, "product_similarity", "product_id_1, product_id_2")
    pairs = {(a, b): s for a, b, s in zip(found.product_id_1, found.product_id_2, found.attribute_similarity_score)}
    # A1/A2: same brand, A1's price unknown: 0.4 + 0.3 x 0.8 = 0.64; A2/A3: same price: 0.4 + 0.3 x 0.6 = 0.58;
    # A4 has neither brand nor price and A1/A3 share neither: no pairs
    assert pairs == {("A1", "A2"): 0.64, ("A2", "A1"): 0.64, ("A2", "A3"): 0.58, ("A3", "A2"): 0.58}


def test_serving_lists_show_an_unknown_name_as_the_id_and_keep_unknown_stock(warehouse):
    put(warehouse, "products", catalogue(
        [{"product_id": p, "product_name": p.lower(), "category": "A", "price": 1.0, **extra}
         for p, extra in [("P1", {}), ("P2", {"stock_quantity": 0}), ("P3", {})]],
        {"stock_quantity": ["P1"], "product_name": ["P1"]},
    ))
    put(warehouse, "product_similarity", frame(
        "product_id_1 product_id_2 attribute_similarity_score similarity_rank", ("P3", "P2", 0.9, 1),
        ("P3", "P1", 0.8, 2)))
    put(warehouse, "complementary_products", frame(
        "product_id_1 product_id_2 complementary_score complementary_rank", ("P1", "P3", 0.5, 1)))
    put(warehouse, "products_bought_together", frame(
        "product_id_1 product_id_2 co_purchase_similarity co_purchase_count", ("P1", "P2", 0.5, 7)))
    put(warehouse, "product_popularity", frame(
        "segment product_id popularity_score popularity_rank", ("all", "P1", 4.0, 1), ("all", "P3", 2.0, 2)))
    put(warehouse, "customer_top_recommendations", frame(
        "customer_id recommendation_rank product_id product_name recommendation_type recommendation_score "
        "evidence variant", ("C1", 1, "P3", "p3", "popular", 1.0, "popular:all", "control")))
    put(warehouse, "product_trending", frame(
        "product_id recent_score baseline_daily_score trending_score trending_rank", ("P1", 30.0, 2.0, 3.33, 1)))
    variables = {**Tuning().as_dict(), "relations_per_product": 10}
    lists = [name for name in PUBLISHED_INPUTS
             if name not in ("customer_placement_recommendations", "merchandising_rules", "customer_segments",
                             "customer_keys")]
    with warehouse.session(lists, variables=variables) as con:
        relations = con.sql(f"SELECT * FROM ({load_sql('serving_product_relations')}) ORDER BY 1, 2, 3").df()
        run(con, "CREATE TEMP TABLE serving_variants AS SELECT 'control' AS variant")
        served = con.sql(f"SELECT * FROM ({load_sql('serving_customer_recommendations')}) ORDER BY 1, 3").df()
    # P3's similar list: P2 is out of stock and dropped, P1 (stock unknown) moves up to rank 1, shown by its id
    assert relations[["product_id", "relation", "rank", "related_product_id", "related_product_name"]] \
        .values.tolist() == [["P1", "complementary", 1, "P3", "p3"], ["P3", "similar", 1, "P1", "P1"]]
    cold = served[served.customer_id == "__cold_start__"]
    assert cold[["product_id", "product_name", "score"]].values.tolist() == [["P1", "P1", 1.0], ["P3", "p3", 0.5]]
