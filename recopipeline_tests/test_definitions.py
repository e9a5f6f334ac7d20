"""The code location loads, with every pipeline stage in its group, described and owned."""

import dagster as dg

PIPELINE = {
    "sources": ["cart_activity", "customer_interactions", "customers", "orders", "products"],
    "behavior": ["customer_behavior_comprehensive", "customer_category_preferences", "customer_product_affinity",
                 "customer_segments", "product_popularity", "product_repurchase_rates"],
    "similarity": ["collaborative_item_similarity", "complementary_products", "product_similarity",
                   "products_bought_together"],
    "recommendations": ["customer_top_recommendations", "product_recommendations"],
}


def test_every_stage_is_an_asset_in_its_group(definitions):
    graph = definitions.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    for group, assets in PIPELINE.items():
        assert sorted(a for a, g in groups.items() if g == group and a in sum(PIPELINE.values(), [])) == assets


def test_assets_are_described_owned_and_kinded(definitions):
    graph = definitions.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description, key
        assert node.owners, key
        assert node.kinds, key


def test_the_full_rebuild_job_covers_the_pipeline(definitions):
    job = definitions.resolve_job_def("full_rebuild")
    selected = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert set(sum(PIPELINE.values(), [])) <= selected


def test_the_blend_reads_the_trending_list_after_it_is_computed_in_both_jobs(definitions):
    """The trending strategy's input is an hourly stage: the nightly job computes it before the blend, the hourly
    job before the customers' refresh."""
    graph = definitions.resolve_asset_graph()
    trending = dg.AssetKey("product_trending")
    assert trending in graph.get(dg.AssetKey("product_recommendations")).parent_keys
    assert trending in graph.get(dg.AssetKey("hourly_customer_refresh")).parent_keys
    for job in ("full_rebuild", "hourly_refresh"):
        assert trending in definitions.resolve_job_def(job).asset_layer.selected_asset_keys
