"""The wide-catalogue benchmark of attribute similarity: its catalogue's shape and a timed run."""

from recopipeline.bench.similarity import category_sizes, time_similarity, wide_catalogue
from recopipeline.lib.contract import arrow_schema


def test_the_wide_catalogue_has_few_large_categories_two_brands_and_shared_prices():
    assert category_sizes(100_000, 20_000)[:3] == [20_000, 14_000, 9_800]
    assert sum(category_sizes(100_000, 20_000)) == 100_000 and max(category_sizes(5_000, 400)) == 400
    catalogue = wide_catalogue(5_000, 1_500).to_pandas()
    assert wide_catalogue(10, 5).schema == arrow_schema("products")
    assert catalogue.groupby("category").size().max() == 1_500
    assert catalogue.brand.nunique() == 2 and catalogue.brand.isna().any() and catalogue.price.isna().any()
    assert catalogue.price.nunique() < 300  # most products share their price with many others
    assert catalogue.product_id.is_unique


def test_time_similarity_runs_the_stage(tmp_path):
    result = time_similarity(tmp_path, products=2_000, largest_category=800)
    assert result["seconds"] > 0 and 0 < result["rows"] <= 2_000 * 50
    assert result["largest_category"] == 800
