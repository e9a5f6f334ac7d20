"""Behaviour layer: segments, the unified event view, affinities, category preferences, popularity and trending."""

from recopipeline.defs.stage import stage_asset

customer_segments = stage_asset("customer_segments")
customer_behavior_comprehensive = stage_asset("customer_behavior_comprehensive")
customer_product_affinity = stage_asset("customer_product_affinity")
customer_category_preferences = stage_asset("customer_category_preferences")
product_popularity = stage_asset("product_popularity")
product_repurchase_rates = stage_asset("product_repurchase_rates")
product_trending = stage_asset("product_trending")
