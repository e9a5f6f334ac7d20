"""Similarity layer: product-to-product relations by attributes, baskets, sequences and shared customers."""

from recopipeline.defs.stage import stage_asset

product_similarity = stage_asset("product_similarity")
products_bought_together = stage_asset("products_bought_together")
complementary_products = stage_asset("complementary_products")
collaborative_item_similarity = stage_asset("collaborative_item_similarity")
ease_item_similarity = stage_asset("ease_item_similarity")  # the EASE model (numpy), see lib/ease.py
