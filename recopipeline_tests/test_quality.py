"""Asset checks: what they report, that a failing blocking check stops everything downstream in the same run,
that drift only warns, and the Great Expectations adapter."""

from __future__ import annotations

from datetime import datetime

import dagster as dg
import pandas as pd
import pytest

from recopipeline.defs.quality import derived_checks as derived
from recopipeline.defs.quality import results
from recopipeline.defs.quality import source_checks as sources
from recopipeline.defs.stage import AS_OF_TAG
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.gx_adapter import Expectation, validate
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse
from recopipeline_tests.conftest import AS_OF, materialize_assets, put, resources_for, rows, unranked
from recopipeline_tests.test_validation import write_sources


def run(definitions, store: Warehouse, selection, source: str = "synthetic:xs", **tuning):
    return materialize_assets(
        list(definitions.assets),
        selection=list(selection),
        resources=resources_for(store, source=source, **tuning),
        tags={AS_OF_TAG: AS_OF.isoformat()},
        raise_on_error=False,
    )


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def evaluation(result, asset: str, check: str):
    (found,) = [
        e for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == asset and e.check_name == check
    ]
    return found


def frame(columns: str, *records) -> pd.DataFrame:
    return pd.DataFrame(records, columns=columns.split())


def test_too_many_quarantined_rows_stop_everything_downstream(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", {"customers": [",x@example.com,2026-01-01,GB"]})  # 1 of 3 rows
    store = Warehouse(str(tmp_path / "warehouse"))
    result = run(definitions, store, [*SOURCES, "customer_segments", "product_similarity"], source=str(folder),
                 quarantine_share_min_rows=1)

    share = evaluation(result, "customers", sources.QUARANTINE_SHARE)
    assert not share.passed and share.severity == dg.AssetCheckSeverity.ERROR
    assert share.metadata["quarantined_rows"].value == 1 and share.metadata["input_rows"].value == 3
    assert "x@example.com" in share.metadata["examples"].value  # a failing example, readable in the UI
    assert "missing_value" in share.metadata["by_reason"].value
    # customers and products were written; everything that depends on customers did not run
    assert {"customers", "products", "product_similarity"} <= materialized(result)
    assert not {"orders", "customer_interactions", "cart_activity", "customer_segments"} & materialized(result)


def test_the_threshold_is_configurable(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", {"customers": [",x@example.com,2026-01-01,GB"]})
    result = run(definitions, Warehouse(str(tmp_path / "warehouse")), ["customers"], source=str(folder),
                 max_quarantine_share=0.5, quarantine_share_min_rows=1)
    assert result.success and evaluation(result, "customers", sources.QUARANTINE_SHARE).passed


def test_the_share_rule_applies_from_a_minimum_of_input_rows(definitions, tmp_path):
    folder = write_sources(tmp_path / "input", {"customers": [",x@example.com,2026-01-01,GB"]})  # 1 of 3 rows
    store = Warehouse(str(tmp_path / "warehouse"))
    result = run(definitions, store, ["customers"], source=str(folder))

    share = evaluation(result, "customers", sources.QUARANTINE_SHARE)
    assert result.success and share.passed
    assert share.description == (
        "1 of 3 input rows quarantined (33.33%; the share rule applies from 100 input rows; below, at most 1 row(s))"
    )
    assert share.metadata["quarantine_share_min_rows"].value == 100
    assert "x@example.com" in share.metadata["examples"].value  # still quarantined, and shown
    assert store.read("SELECT count(*) AS n FROM quarantine", inputs=["quarantine"]).n[0] == 1
    # from the minimum on, the same share fails
    result = run(definitions, store, ["customers"], source=str(folder), quarantine_share_min_rows=3)
    assert not evaluation(result, "customers", sources.QUARANTINE_SHARE).passed
    # below it, a small ingest that is mostly bad fails: 2 of 4 rows is more than the 1 row the share allows
    folder = write_sources(tmp_path / "input2", {"customers": [",x@example.com,2026-01-01,GB", ",y@example.com,,GB"]})
    result = run(definitions, Warehouse(str(tmp_path / "warehouse2")), ["customers"], source=str(folder))
    assert not evaluation(result, "customers", sources.QUARANTINE_SHARE).passed


def test_a_broken_invariant_blocks_downstream_and_shows_examples(definitions, warehouse):
    # customers that bypassed ingest validation: C1 twice
    put(warehouse, "customers", rows("customers", [{"customer_id": c} for c in ("C1", "C1", "C2")]))
    put(warehouse, "products", rows("products", [{"product_id": "P1", "product_name": "P1", "category": "A",
                                                  "price": 1.0}]))
    put(warehouse, "orders", rows("orders", []))
    put(warehouse, "cart_activity", rows("cart_activity", []))
    put(warehouse, "customer_interactions", rows("customer_interactions", [
        {"customer_id": "C2", "product_id": "P1", "interaction_type": "view", "interaction_timestamp": AS_OF}]))
    result = run(definitions, warehouse, ["customer_segments", "customer_behavior_comprehensive"])

    unique = evaluation(result, "customer_segments", derived.UNIQUE_KEY)
    assert not unique.passed and unique.metadata["violations"].value == 1
    assert "C1" in unique.metadata["examples"].value and "copies" in unique.metadata["examples"].value
    assert evaluation(result, "customer_segments", derived.EVERY_CUSTOMER_SEGMENTED).passed
    assert materialized(result) == {"customer_segments"}  # customer_behavior_comprehensive did not run
    assert not result.success


@pytest.fixture
def blend_inputs(warehouse):
    """C1 bought P1 and likes category A; C2 is new. Only the 'returning' segment has a popular list."""
    put(warehouse, "customers", rows("customers", [{"customer_id": "C1"}, {"customer_id": "C2"}]))
    put(warehouse, "products", rows("products", [
        {"product_id": p, "product_name": p, "category": "A", "price": 1.0, **extra}
        for p, extra in [("P1", {}), ("P2", {}), ("P3", {"stock_quantity": 0})]
    ]))
    put(warehouse, "orders", rows("orders", [
        {"order_id": "O1", "customer_id": "C1", "product_id": "P1", "order_timestamp": AS_OF}]))
    put(warehouse, "merchandising_rules", rows("merchandising_rules", []))
    put(warehouse, "customer_segments", frame("customer_id customer_segment", ("C1", "returning"), ("C2", "new")))
    put(warehouse, "customer_product_affinity", frame(
        "customer_id product_id weighted_affinity_score purchase_count weighted_purchase_count",
        ("C1", "P1", 10.0, 1, 1.0)))
    put(warehouse, "customer_category_preferences", frame(
        "customer_id category weighted_category_score category_rank", ("C1", "A", 10.0, 1)))
    put(warehouse, "product_popularity", frame(
        "segment product_id category popularity_score popularity_rank category_rank",
        ("all", "P2", "A", 5.0, 1, 1), ("returning", "P2", "A", 5.0, 1, 1)))
    for name in ("product_similarity", "complementary_products", "collaborative_item_similarity"):
        rank = {"product_similarity": "similarity_rank", "complementary_products": "complementary_rank",
                "collaborative_item_similarity": "cf_rank"}[name]
        score = {"product_similarity": "attribute_similarity_score", "complementary_products": "complementary_score",
                 "collaborative_item_similarity": "cf_similarity"}[name]
        put(warehouse, name, frame(f"product_id_1 product_id_2 {score} {rank}", ("P1", "P2", 0.7, 1)))
    put(warehouse, "ease_item_similarity",
        frame("product_id_1 product_id_2 ease_weight ease_rank", ("P1", "P2", 0.1, 1)))
    put(warehouse, "product_repurchase_rates", frame(
        "product_id buyers repeat_buyers repeat_rate recent_orders recent_trend repurchase_factor",
        ("P1", 1, 0, 1 / 3, 1, 1.0, 3 * (1 / 3) ** 0.25)))
    put(warehouse, "product_trending", frame(
        "product_id recent_score baseline_daily_score trending_score trending_rank", ("P2", 30.0, 10.0, 2.0, 1)))
    return warehouse


def test_a_customer_without_recommendations_stops_the_top_list(definitions, blend_inputs):
    result = run(definitions, blend_inputs, ["product_recommendations", "customer_top_recommendations"])
    served = evaluation(result, "product_recommendations", derived.EVERY_CUSTOMER_SERVED)
    assert not served.passed and "C2" in served.metadata["examples"].value
    for check in (derived.UNIQUE_KEY, derived.ONLY_AVAILABLE_PRODUCTS, derived.NOTHING_PURCHASED):
        assert evaluation(result, "product_recommendations", check).passed
    assert "customer_top_recommendations" not in materialized(result)


def test_the_top_list_passes_its_checks_and_its_gx_suite(definitions, blend_inputs):
    put(blend_inputs, "customer_segments", frame("customer_id customer_segment", ("C1", "returning")))
    assert run(definitions, blend_inputs, ["product_recommendations"]).success
    unranked(blend_inputs)
    result = run(definitions, blend_inputs, ["customer_top_recommendations"])
    assert result.success
    suite = evaluation(result, "customer_top_recommendations", derived.GX_EXPECTATIONS)
    assert suite.passed and suite.metadata["failed_expectations"].value == 0
    assert "expect_compound_columns_to_be_unique" in suite.metadata["expectations"].value


def test_the_gx_suite_catches_what_the_sql_rules_do_not(definitions, blend_inputs):
    put(blend_inputs, "customer_segments", frame("customer_id customer_segment", ("C1", "returning")))
    put(blend_inputs, "product_recommendations", frame(
        "customer_id product_id recommendation_type recommendation_score strategies evidence recommendation_rank "
        "variant", ("C1", "P2", "mystery", 0.5, "mystery", "", 1, "control")))
    result = run(definitions, blend_inputs, ["customer_top_recommendations"])
    suite = evaluation(result, "customer_top_recommendations", derived.GX_EXPECTATIONS)
    assert not suite.passed and suite.metadata["failed_expectations"].value == 1
    assert "mystery" in suite.metadata["expectations"].value
    assert evaluation(result, "customer_top_recommendations", derived.VALUES_IN_RANGE).passed


@pytest.mark.parametrize(
    ("check", "bad_row"),
    [
        (derived.UNIQUE_RANK, ("C1", "P5", 1)),  # a second rank 1
        (derived.UNIQUE_KEY, ("C1", "P2", 3)),  # P2 twice
        (derived.ONLY_AVAILABLE_PRODUCTS, ("C1", "P3", 3)),  # out of stock
        (derived.NOTHING_PURCHASED, ("C1", "P1", 3)),  # bought in O1
        (derived.VALUES_IN_RANGE, ("C1", "P5", 99)),  # rank beyond top_n
    ],
)
def test_each_recommendation_invariant_finds_its_violation(blend_inputs, check, bad_row):
    put(blend_inputs, "products", rows("products", [
        {"product_id": p, "product_name": p, "category": "A", "price": 1.0, **extra}
        for p, extra in [("P1", {}), ("P2", {}), ("P3", {"stock_quantity": 0}), ("P4", {}), ("P5", {})]
    ]))
    good = [("C1", "P2", 1), ("C1", "P4", 2), ("C2", "P2", 1)]
    put(blend_inputs, "customer_top_recommendations", pd.DataFrame(
        [(*r, 0.5) for r in [*good, bad_row]],
        columns=["customer_id", "product_id", "recommendation_rank", "recommendation_score"]))
    tuning = Tuning()
    invariants = {i.check: i for i in derived.INVARIANTS["customer_top_recommendations"]}
    inputs = ["customer_top_recommendations", *sorted({name for i in invariants.values() for name in i.needs})]
    with blend_inputs.session(inputs, variables={**tuning.as_dict(), "as_of": AS_OF}) as con:
        outcomes = {name: results.violations(con, name, i.sql, i.description) for name, i in invariants.items()}
    assert [name for name, outcome in outcomes.items() if not outcome.passed] == [check]
    assert "| C1 " in outcomes[check].metadata["examples"].value  # the failing rows, as a markdown table


def test_row_count_drift_warns_but_does_not_block(definitions, warehouse):
    catalogue = [{"product_id": f"P{i}", "product_name": "x", "category": "A", "brand": "B", "price": 1.0}
                 for i in range(3)]
    put(warehouse, "products", rows("products", catalogue))
    instance = dg.DagsterInstance.ephemeral()
    resources = resources_for(warehouse)
    first = dg.materialize(list(definitions.assets), selection=["product_similarity"], resources=resources,
                           instance=instance, tags={AS_OF_TAG: AS_OF.isoformat()})
    assert evaluation(first, "product_similarity", derived.ROW_COUNT_DRIFT).passed  # nothing to compare with
    put(warehouse, "products", rows("products", catalogue * 1 + [
        {**catalogue[0], "product_id": f"Q{i}"} for i in range(5)]))
    second = dg.materialize(list(definitions.assets), selection=["product_similarity"], resources=resources,
                            instance=instance, tags={AS_OF_TAG: AS_OF.isoformat()})
    drift = evaluation(second, "product_similarity", derived.ROW_COUNT_DRIFT)
    assert second.success and not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
    assert drift.metadata["previous_rows"].value == 6 and drift.metadata["rows"].value == 56


def test_every_check_passes_on_synthetic_sources_with_readable_metadata(definitions, tmp_path_factory):
    store = Warehouse(str(tmp_path_factory.mktemp("synthetic") / "warehouse"))
    result = run(definitions, store, list(SOURCES))
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    # five checks per source; the rules (no file: no rules) have no keys, and two checks of their own
    assert len(evaluations) == 5 * len(SOURCES) + 1 and all(e.passed for e in evaluations)
    suite = evaluation(result, "customer_interactions", sources.CONTRACT_EXPECTATIONS)
    assert suite.metadata["sample_rows"].value == Tuning().gx_sample_rows < suite.metadata["table_rows"].value
    assert "expect_column_values_to_be_in_set" in suite.metadata["expectations"].value


def test_gx_adapter_reports_each_expectation_with_failing_examples():
    sample = pd.DataFrame({"price": [1.0, -2.0, 3.0], "kind": ["view", "hover", "view"],
                           "at": [datetime(2026, 1, 1)] * 3})
    outcome = validate(sample, "adapter_test", [
        Expectation("ExpectColumnValuesToBeBetween", {"column": "price", "min_value": 0}),
        Expectation("ExpectColumnValuesToBeInSet", {"column": "kind", "value_set": ["view", "click"]}),
        Expectation("ExpectColumnValuesToNotBeNull", {"column": "at"}),
        Expectation("ExpectColumnValuesToNotBeNull", {"column": "no_such_column"}),
    ])
    assert not outcome.success and outcome.rows == 3
    by_target = {o.target: o for o in outcome.outcomes}
    assert by_target["price"].examples == (-2.0,) and by_target["price"].unexpected_count == 1
    assert by_target["kind"].examples == ("hover",)
    assert by_target["at"].success
    assert not by_target["no_such_column"].success and by_target["no_such_column"].error
    table = outcome.markdown()
    assert table.index("**FAIL**") < table.index("| pass |")  # failures first
