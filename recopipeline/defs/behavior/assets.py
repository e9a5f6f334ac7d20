"""Behaviour layer: segments, the unified event view, affinities, category preferences and popularity."""

from recopipeline.defs.stage import sql_asset

GROUP = "behavior"

customer_segments = sql_asset(
    "customer_segments",
    group=GROUP,
    inputs=["customers", "customer_interactions", "orders"],
    description="One row per known customer: activity summary and segment (new, returning, vip, at_risk).",
    order_by="customer_id",
)

customer_behavior_comprehensive = sql_asset(
    "customer_behavior_comprehensive",
    group=GROUP,
    inputs=["customer_interactions", "products", "customer_segments", "orders", "cart_activity"],
    description=(
        "Every interaction up to the as-of time, once, with customer segment, product attributes, "
        "order and cart context, event score and recency weight."
    ),
    order_by="customer_id, interaction_timestamp, event_id",
    score_column="recency_score",
)

customer_product_affinity = sql_asset(
    "customer_product_affinity",
    group=GROUP,
    inputs=["customer_behavior_comprehensive"],
    description="How much each customer likes each product: event counts and recency-weighted affinity.",
    order_by="customer_id, product_id",
    score_column="weighted_affinity_score",
    customer_inputs=["customer_behavior_comprehensive"],  # sorted by customer: a batch reads its row groups
)

customer_category_preferences = sql_asset(
    "customer_category_preferences",
    group=GROUP,
    inputs=["customer_behavior_comprehensive", "orders", "products"],
    description="Each customer's categories ranked by recency-weighted interest (deterministic rank).",
    order_by="customer_id, category_rank",
    score_column="weighted_category_score",
)

product_popularity = sql_asset(
    "product_popularity",
    group=GROUP,
    inputs=["customer_behavior_comprehensive", "products"],
    description="Ranked popular available products, overall and per customer segment (trending weighted).",
    order_by="segment, popularity_rank, product_id",
    score_column="popularity_score",
)

product_repurchase_rates = sql_asset(
    "product_repurchase_rates",
    group=GROUP,
    inputs=["orders"],
    description=(
        "How likely each bought product is to be bought again: smoothed repeat-buyer rate and recent sales "
        "trend, combined into the factor the repurchase strategy weighs a customer's own orders by."
    ),
    order_by="product_id",
    score_column="repurchase_factor",
)
