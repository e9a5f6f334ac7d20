"""Similarity layer: product-to-product relations by attributes, baskets, sequences and shared customers."""

from recopipeline.defs.stage import sql_asset

GROUP = "similarity"

product_similarity = sql_asset(
    "product_similarity",
    group=GROUP,
    inputs=["products"],
    description="Attribute similarity (category, brand, price band), both directions, top-K per product.",
    order_by="product_id_1, similarity_rank",
    score_column="attribute_similarity_score",
)

products_bought_together = sql_asset(
    "products_bought_together",
    group=GROUP,
    inputs=["orders"],
    description="Pairs in the same order at least min_support times, both directions, with a correct Jaccard.",
    order_by="product_id_1, product_id_2",
    score_column="co_purchase_similarity",
)

complementary_products = sql_asset(
    "complementary_products",
    group=GROUP,
    inputs=["products_bought_together", "orders"],
    description="Directional A -> B complements from co-purchase similarity and sequential purchase.",
    order_by="product_id_1, complementary_rank",
    score_column="complementary_score",
)

collaborative_item_similarity = sql_asset(
    "collaborative_item_similarity",
    group=GROUP,
    inputs=["customer_product_affinity"],
    description="Item-to-item cosine similarity over customers' affinities, top-K neighbours per product.",
    order_by="product_id_1, cf_rank",
    score_column="cf_similarity",
    anchor_products=True,  # the item pairs are aggregated per batch of anchor products (bounded memory)
)
