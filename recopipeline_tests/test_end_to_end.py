"""The whole graph on synthetic and real data: invariants, determinism and a multiprocess run.

The synthetic graph is the session's nightly rebuild (`nightly`), read here and never written; the real data is
built once in this module.
"""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from recopipeline.lib.stages import STAGES, latest_event_time, stage, write_stage
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse
from recopipeline_tests.conftest import NOT_NIGHTLY, materialize_assets, resources_for

SOURCES = ["synthetic:xs", "online_retail:sample"]
# batches of uneven sizes, more than five of them on either data set (2,000 customers, 3,659 products when real)
BATCH_SIZES = {"synthetic:xs": {"batch_customers": 37, "batch_products": 7},
               "online_retail:sample": {"batch_customers": 307, "batch_products": 401}}


@dataclass(frozen=True)
class Built:
    source: str
    store: Warehouse
    as_of: datetime  # the tables are as of this time: the newest event, or the nightly base's hour


@pytest.fixture(scope="module", params=SOURCES)
def built(request, definitions, tmp_path_factory, nightly) -> Built:
    if request.param == "synthetic:xs":
        return Built(request.param, nightly.store, nightly.hour)
    root = tmp_path_factory.mktemp("real")
    store = Warehouse(root=str(root / "warehouse"), memory_limit="2GB", threads=2)
    resources = resources_for(store, request.param, str(root / "input"))
    assert materialize_assets(list(definitions.assets), resources=resources).success
    return Built(request.param, store, latest_event_time(store))


def test_every_known_customer_is_served_at_most_n(built):
    counts = built.store.read(
        "SELECT c.customer_id, count(t.product_id) AS n FROM customers AS c "
        "LEFT JOIN customer_top_recommendations AS t USING (customer_id) GROUP BY c.customer_id",
        inputs=["customers", "customer_top_recommendations"],
    )
    assert len(counts) > 100
    assert counts.n.min() >= 1 and counts.n.max() <= 20


def test_no_purchased_unavailable_or_duplicate_recommendations(built):
    violations = built.store.read(
        """
        SELECT
          (SELECT count(*) FROM customer_top_recommendations t JOIN orders o USING (customer_id, product_id)
            WHERE o.order_timestamp <= $as_of) AS bought,
          (SELECT count(*) FROM customer_top_recommendations t JOIN products p USING (product_id)
            WHERE NOT p.is_active OR p.stock_quantity <= 0) AS unavailable,
          (SELECT count(*) - count(DISTINCT (customer_id, product_id)) FROM customer_top_recommendations) AS dupes,
          (SELECT count(*) - count(DISTINCT (customer_id, recommendation_rank)) FROM customer_top_recommendations)
              AS rank_dupes,
          (SELECT count(*) FROM customer_top_recommendations
            WHERE recommendation_score NOT BETWEEN 0 AND 1) AS out_of_range
        """,
        inputs=["customer_top_recommendations", "orders", "products"],
        params={"as_of": built.as_of},
    )
    assert violations.iloc[0].to_dict() == {"bought": 0, "unavailable": 0, "dupes": 0, "rank_dupes": 0,
                                            "out_of_range": 0}


def test_personalised_strategies_all_contribute(built):
    contributing = set(built.store.read(
        "SELECT DISTINCT unnest(string_split(strategies, ',')) AS strategy FROM product_recommendations",
        inputs=["product_recommendations"]).strategy)
    assert {"affinity_similar", "collaborative", "complementary", "ease", "popular"} <= contributing


def test_catalog_has_a_view_per_asset(built, definitions):
    views = set(built.store.query_catalog("SELECT view_name FROM duckdb_views() WHERE NOT internal").view_name)
    graph = definitions.resolve_asset_graph()
    nightly = {key.path[-1] for key in graph.materializable_asset_keys if graph.get(key).group_name not in NOT_NIGHTLY}
    assert nightly <= views


def test_two_runs_give_identical_tables(definitions, tmp_path, nightly):
    first, second = nightly.store, nightly.rebuild(definitions, tmp_path)
    for asset in first.assets():
        a, b = (store.read(f"SELECT * FROM {asset}", inputs=[asset]) for store in (first, second))
        keys = list(a.columns)
        pd.testing.assert_frame_equal(
            a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True), obj=asset
        )


@pytest.mark.slow
def test_multiprocess_run_executes_steps_in_parallel(tmp_path, monkeypatch):
    from recopipeline.runner import instance_from_env, materialize

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("RECOPIPELINE_WAREHOUSE", str(tmp_path / "warehouse"))
    monkeypatch.setenv("RECOPIPELINE_SOURCE", "synthetic:xs")
    monkeypatch.setenv("RECOPIPELINE_HOME", str(tmp_path / "home"))
    instance = instance_from_env()
    summary = materialize(instance=instance, executor="multiprocess")  # `auto` would run xs in process
    assert summary.success, summary.failures
    assert len(summary.materialized) >= 19  # the 16 pipeline assets and the publish group's 3, at least
    assert {"customer_top_recommendations", "published_recommendations"} <= set(summary.materialized)
    records = instance.all_logs(summary.run_id)
    starts = {r.step_key: r.timestamp for r in records if r.dagster_event and r.dagster_event.event_type_value == "STEP_START"}
    ends = {r.step_key: r.timestamp for r in records if r.dagster_event and r.dagster_event.event_type_value == "STEP_SUCCESS"}
    overlapping = [
        (a, b) for a in starts for b in starts
        if a < b and starts[a] < ends[b] and starts[b] < ends[a]
    ]
    assert overlapping, "no two steps ran at the same time"
    assert instance.get_run_by_id(summary.run_id).status == dg.DagsterRunStatus.SUCCESS


# the stages that batch their work themselves: the blend its customers, the item pairs their anchor products
SELF_BATCHED = ["collaborative_item_similarity", "product_recommendations"]


# the learned ranking's tables are empty with it off (the default); test_ranking.py writes and checks them
@pytest.mark.parametrize(
    "name", sorted(spec.name for spec in STAGES if spec.name not in ("candidate_features", "learned_recommendations"))
)
def test_every_stage_is_written_in_its_row_order(built, name):
    """Stages with `rows_in_order` are written unsorted, as their compute gives the rows; the order must hold."""
    spec = stage(name)
    paths = ", ".join(f"'{path}'" for path in built.store.files(name))
    columns = [column.strip() for column in spec.order_by.split(",")]
    written = built.store.read(
        f"SELECT {spec.order_by} FROM read_parquet([{paths}], file_row_number = true) ORDER BY file_row_number"
    )
    assert len(written) > 0
    pd.testing.assert_frame_equal(written, written.sort_values(columns, ignore_index=True, kind="stable"))


@pytest.mark.parametrize("name", SELF_BATCHED)
def test_a_stage_in_small_batches_equals_one_pass(built, tmp_path, name):
    """`batch_customers` and `batch_products` bound a stage's memory; its table must not depend on them."""
    spec = stage(name)
    batched = Warehouse(root=str(tmp_path / "batched"), memory_limit="1GB", threads=2)
    for asset in spec.inputs:
        (tmp_path / "batched" / asset).mkdir(parents=True)
        for file in Path(built.store.asset_dir(asset)).glob("*.parquet"):
            (tmp_path / "batched" / asset / file.name).write_bytes(file.read_bytes())
    tuning = Tuning(**BATCH_SIZES[built.source])
    with batched.session(spec.inputs, variables={**tuning.as_dict(), "as_of": built.as_of}) as con:
        write_stage(batched, con, spec, tuning)
    one_pass, in_batches = (
        store.read(f"SELECT * FROM {name} ORDER BY {spec.order_by}", inputs=[name])
        for store in (built.store, batched)
    )
    pd.testing.assert_frame_equal(one_pass, in_batches)
