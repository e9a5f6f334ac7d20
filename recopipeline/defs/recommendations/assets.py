"""Recommendation layer: the blended candidates and each customer's top N."""

import duckdb

from recopipeline.defs.stage import sql_asset
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import run

GROUP = "recommendations"


def create_strategy_weights(con: duckdb.DuckDBPyConnection, tuning: Tuning) -> None:
    """The blend weights of each A/B variant as a small table, in priority order, and the variants' hash ranges."""
    run(con, "CREATE TEMP TABLE strategy_weights (variant VARCHAR, strategy VARCHAR, weight DOUBLE, priority INTEGER)")
    for variant, weights in tuning.variant_strategy_weights().items():
        # the blend packs a strategy's priority into 4 bits of its strength key (product_recommendations.sql)
        assert len(weights) < 16, "at most 15 strategies"
        for priority, (strategy, weight) in enumerate(weights.items(), start=1):
            run(con, "INSERT INTO strategy_weights VALUES (?, ?, ?, ?)", [variant, strategy, weight, priority])
    run(con, "CREATE TEMP TABLE variant_buckets (variant VARCHAR, lower_bound UBIGINT, upper_bound UBIGINT)")
    for variant, lower, upper in tuning.experiment().buckets():
        run(con, "INSERT INTO variant_buckets VALUES (?, ?, ?)", [variant, lower, upper])


product_recommendations = sql_asset(
    "product_recommendations",
    group=GROUP,
    inputs=[
        "products",
        "orders",
        "customer_segments",
        "customer_product_affinity",
        "customer_category_preferences",
        "product_popularity",
        "product_repurchase_rates",
        "product_similarity",
        "complementary_products",
        "collaborative_item_similarity",
        "ease_item_similarity",
    ],
    description=(
        "Every strategy's candidates, normalised and blended into one row per (customer, product), "
        "available and not yet purchased, ranked with a deterministic tie-break."
    ),
    order_by="customer_id, recommendation_rank",
    score_column="recommendation_score",
    prepare=create_strategy_weights,
    customer_inputs=["customer_segments", "orders", "customer_product_affinity", "customer_category_preferences"],
)

customer_top_recommendations = sql_asset(
    "customer_top_recommendations",
    group=GROUP,
    inputs=["product_recommendations", "products"],
    description="Each customer's top N recommendations with type, score and evidence.",
    order_by="customer_id, recommendation_rank",
    score_column="recommendation_score",
)
