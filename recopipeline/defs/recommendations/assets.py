"""Recommendation layer: the blended candidates and each customer's top N."""

from recopipeline.defs.stage import stage_asset

product_recommendations = stage_asset("product_recommendations")
customer_top_recommendations = stage_asset("customer_top_recommendations")
customer_placement_recommendations = stage_asset("customer_placement_recommendations")
