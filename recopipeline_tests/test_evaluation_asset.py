"""The offline evaluation end to end on a tiny raw Online Retail file, through its Dagster asset."""

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from recopipeline.defs.evaluation.assets import offline_evaluation
from recopipeline.defs.resources import TuningResource
from recopipeline.evaluation.report import markdown_report
from recopipeline.evaluation.run import evaluate

# (invoice, customer, stock code, date): six customers, the cut at 2011-10-01
LINES = [
    ("500001", 1, "10001", "2011-06-01"), ("500001", 1, "10002", "2011-06-01"),
    ("500002", 2, "10001", "2011-06-02"), ("500002", 2, "10002", "2011-06-02"), ("500002", 2, "10003", "2011-06-02"),
    ("500003", 3, "10002", "2011-07-01"), ("500003", 3, "10003", "2011-07-01"),
    ("500004", 4, "10004", "2011-08-01"), ("500004", 4, "10005", "2011-08-01"),
    ("500005", 5, "10001", "2011-09-01"), ("500005", 5, "10004", "2011-09-01"),
    ("500006", 1, "10001", "2011-09-20"),
    ("600001", 1, "10003", "2011-10-05"), ("600001", 1, "10001", "2011-10-05"),
    ("600002", 3, "10001", "2011-10-06"), ("600003", 4, "10005", "2011-11-01"), ("600003", 4, "10001", "2011-11-01"),
    ("600004", 6, "10002", "2011-11-02"),  # customer 6 has no history: not tested
]


@pytest.fixture(scope="module")
def raw_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "tiny_retail.parquet"
    pd.DataFrame({
        "InvoiceNo": [l[0] for l in LINES],
        "StockCode": [l[2] for l in LINES],
        "Description": [f"item {l[2]}" for l in LINES],
        "Quantity": [1] * len(LINES),
        "InvoiceDate": [f"{l[3]} 10:00:00" for l in LINES],
        "UnitPrice": [2.5] * len(LINES),
        "CustomerID": [float(12000 + l[1]) for l in LINES],
        "Country": ["United Kingdom"] * len(LINES),
    }).to_parquet(path)
    return path


def test_evaluate_scores_every_method_on_both_variants(raw_file, tmp_path):
    result = evaluate(raw_file, tmp_path)
    assert result["test_customers"] == {"discovery": 3, "repeat": 3}  # customers 1, 3 and 4
    methods = {(r["variant"], r["method"]) for r in result["rows"]}
    assert {("discovery", "global_popularity"), ("discovery", "pipeline_default"), ("discovery", "tutorial_blend"),
            ("repeat", "buy_it_again"), ("repeat", "pipeline_repeat"), ("repeat", "only_repurchase"),
            ("discovery", "only_ease"), ("discovery", "with_trending_2"), ("repeat", "with_trending_0.5"),
            ("discovery", "only_trending")} <= methods
    assert all(0 <= r[m] <= 1 for r in result["rows"] for m in ("ndcg@20", "recall@20", "map@20", "served"))
    # the pipeline serves every test customer; buy it again finds customer 1's re-bought 10001
    repeat = {r["method"]: r for r in result["rows"] if r["variant"] == "repeat"}
    assert repeat["pipeline_repeat"]["served"] == 1.0 and repeat["buy_it_again"]["hit_rate@20"] > 0
    assert "| **pipeline_default** |" in markdown_report(result)


def test_the_asset_reports_numeric_metadata(raw_file, tmp_path):
    result = dg.materialize(
        [offline_evaluation],
        resources={"tuning": TuningResource()},
        run_config={"ops": {"offline_evaluation": {"config": {"data": str(raw_file), "home": str(tmp_path)}}}},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("offline_evaluation")[0].metadata
    assert isinstance(metadata["discovery/pipeline_default/ndcg@20"], dg.FloatMetadataValue)
    assert isinstance(metadata["repeat/buy_it_again/ndcg@20"], dg.FloatMetadataValue)
    assert "repeat/pipeline_repeat/ndcg@20_over_buy_it_again" in metadata
    assert metadata["repeat/test_customers"].value == 3


def test_the_evaluation_is_not_part_of_the_nightly_rebuild(definitions):
    job = definitions.resolve_job_def("full_rebuild")
    assert dg.AssetKey("offline_evaluation") not in job.asset_layer.executable_asset_keys
    assert dg.AssetKey("ease_item_similarity") in job.asset_layer.executable_asset_keys
