"""Recommendation layer: the blended candidates and each customer's top N."""

from recopipeline.defs.stage import stage_asset

product_recommendations = stage_asset("product_recommendations")
customer_top_recommendations = stage_asset("customer_top_recommendations")
customer_placement_recommendations = stage_asset("customer_placement_recommendations")
candidate_features = stage_asset("candidate_features")
ranking_model = stage_asset("ranking_model")
learned_recommendations = stage_asset("learned_recommendations")
