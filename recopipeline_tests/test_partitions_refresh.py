"""The hourly refresh gives the touched customers exactly what a full rebuild over the same data gives them."""

from __future__ import annotations

from datetime import datetime

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy import select

from recopipeline.defs.incremental.assets import HOURLY_CUSTOMER_REFRESH
from recopipeline.lib.contract import EVENT_SOURCES
from recopipeline.lib.stages import per_customer_stages, shared_tables
from recopipeline.lib.hourly import HOUR, hour_key
from recopipeline.lib.warehouse import Warehouse
from recopipeline.serving.database import ServingDatabase
from recopipeline.serving.read import Recommender
from recopipeline.serving.schema import LISTS, customer_recommendations, serving_state
from recopipeline_tests.conftest import stage
from recopipeline_tests.nightly_base import job_selection

@pytest.fixture(scope="module")
def refreshed(definitions, tmp_path_factory, nightly):
    """The nightly rebuild as of an hour's start, then the hourly refresh of that hour."""
    base = nightly
    store = base.copy_to(tmp_path_factory.mktemp("refresh"))
    resources = base.resources(store)
    hourly = dg.materialize(
        list(definitions.assets), selection=job_selection(definitions, "hourly_refresh"), resources=resources,
        partition_key=hour_key(base.hour),
    )
    assert hourly.success
    return {"store": store, "hour": base.hour, "resources": resources, "nightly": base.store}


def refreshed_rows(store: Warehouse, hour: datetime) -> pd.DataFrame:
    path = store.partition_path(HOURLY_CUSTOMER_REFRESH, hour_key(hour))
    return store.read(f"SELECT * FROM read_parquet('{path}') ORDER BY customer_id, recommendation_rank")


def active_customers(store: Warehouse, hour: datetime) -> set[str]:
    parts = " UNION ".join(
        f"SELECT customer_id FROM {source} WHERE {column} >= $start AND {column} < $end"
        for source, column in (("customer_interactions", "interaction_timestamp"), ("orders", "order_timestamp"),
                               ("cart_activity", "added_at"))
    )
    frame = store.read(parts, inputs=list(EVENT_SOURCES), params={"start": hour, "end": hour + HOUR})
    return set(frame.customer_id)


def test_the_refresh_covers_exactly_the_customers_active_in_the_hour(refreshed):
    store, hour = refreshed["store"], refreshed["hour"]
    rows = refreshed_rows(store, hour)
    assert set(rows.customer_id) == active_customers(store, hour)
    assert rows.customer_id.nunique() >= 3
    assert list(rows.columns) == list(store.read("SELECT * FROM customer_top_recommendations LIMIT 0",
                                                 inputs=["customer_top_recommendations"]).columns)


def test_the_refresh_equals_a_full_rebuild_with_the_same_product_tables(definitions, refreshed):
    store, hour = refreshed["store"], refreshed["hour"]
    rows = refreshed_rows(store, hour)
    before = {name: store.read(f"SELECT * FROM {name}", inputs=[name]) for name in shared_tables()
              if name not in ("products",)}
    # the full rebuild of every per-customer stage over all the data, as of the hour's end, same product tables
    stage(definitions, store, [spec.name for spec in per_customer_stages()], as_of=hour + HOUR)
    for name, frame in before.items():  # the product tables were not rebuilt
        pd.testing.assert_frame_equal(store.read(f"SELECT * FROM {name}", inputs=[name]), frame, obj=name)
    full = store.read(
        "SELECT * FROM customer_top_recommendations WHERE customer_id IN (SELECT unnest($ids)) "
        "ORDER BY customer_id, recommendation_rank",
        inputs=["customer_top_recommendations"],
        params={"ids": sorted(set(rows.customer_id))},
    )
    pd.testing.assert_frame_equal(rows, full)


def test_the_refresh_reruns_every_per_customer_stage_and_nothing_else():
    assert [spec.name for spec in per_customer_stages()] == [
        "customer_segments", "customer_behavior_comprehensive", "customer_category_preferences",
        "customer_placement_recommendations", "customer_product_affinity", "product_recommendations",
        "candidate_features", "learned_recommendations", "customer_top_recommendations"]
    # everything a per-customer stage reads is recomputed, restricted to the customers, or a shared table
    assert "product_popularity" in shared_tables() and "collaborative_item_similarity" in shared_tables()
    assert not set(shared_tables()) & {"customer_segments", "customer_product_affinity", "customer_interactions"}


def test_the_touched_customers_are_published_and_others_are_left_alone(refreshed):
    store, hour = refreshed["store"], refreshed["hour"]
    rows = refreshed_rows(store, hour)
    database = ServingDatabase(refreshed["resources"]["serving"].url)
    try:
        with database.engine.connect() as conn:
            version = conn.execute(select(serving_state.c.current_version)).scalar()
            served = pd.DataFrame(conn.execute(
                select(customer_recommendations.c.customer_id, customer_recommendations.c.rank,
                       customer_recommendations.c.product_id, customer_recommendations.c.score)
                .where(customer_recommendations.c.version == version)
                .order_by(customer_recommendations.c.customer_id, customer_recommendations.c.rank)
            ).all(), columns=["customer_id", "rank", "product_id", "score"])
    finally:
        database.dispose()
    touched = served[served.customer_id.isin(set(rows.customer_id))].reset_index(drop=True)
    expected = rows.rename(columns={"recommendation_rank": "rank", "recommendation_score": "score"})[
        ["customer_id", "rank", "product_id", "score"]
    ].reset_index(drop=True)
    pd.testing.assert_frame_equal(touched, expected, check_dtype=False)
    nightly = refreshed["nightly"].read(  # the nightly table as published (other tests rebuild theirs)
        "SELECT customer_id, recommendation_rank AS rank, product_id FROM customer_top_recommendations",
        inputs=["customer_top_recommendations"],
    )
    untouched = served[~served.customer_id.isin(set(rows.customer_id) | set(LISTS))]
    assert len(untouched) > 0
    merged = untouched.merge(nightly, on=["customer_id", "rank"], suffixes=("", "_nightly"))
    assert len(merged) == len(untouched) and (merged.product_id == merged.product_id_nightly).all()


def test_an_older_hour_is_recomputed_but_not_published(definitions, refreshed):
    hour = refreshed["hour"]
    older = hour - HOUR
    result = dg.materialize(
        list(definitions.assets), selection=["hourly_customer_refresh", "hourly_customer_publish"],
        resources=refreshed["resources"], partition_key=hour_key(older),
    )
    assert result.success
    publish = next(e for e in result.get_asset_materialization_events()
                   if e.asset_key == dg.AssetKey("hourly_customer_publish"))
    metadata = publish.materialization.metadata
    assert metadata["published_hours"].value == 0 and hour_key(older) in metadata["skipped_hours"].value


def test_the_hourly_run_recomputes_and_publishes_the_trending_list_as_of_its_hour(refreshed):
    store, nightly = refreshed["store"], refreshed["nightly"]
    query = "SELECT product_id FROM product_trending JOIN products USING (product_key) ORDER BY trending_rank"
    hourly = store.read(query, inputs=["product_trending", "products"]).product_id.tolist()
    before = nightly.read(query, inputs=["product_trending", "products"]).product_id.tolist()
    assert hourly and hourly != before  # an hour later, the last 24 hours are other events
    database = ServingDatabase(refreshed["resources"]["serving"].url)
    try:
        served = [item["product_id"] for item in Recommender(database, cache_ttl=0).trending(limit=50)]
    finally:
        database.dispose()
    assert served == hourly


def test_the_refreshed_customers_placement_lists_are_published_and_others_kept(refreshed):
    from recopipeline.defs.incremental.assets import HOURLY_PLACEMENT_REFRESH
    from recopipeline.serving.schema import customer_placement_lists

    store, hour = refreshed["store"], refreshed["hour"]
    touched = set(refreshed_rows(store, hour).customer_id)
    path = store.partition_path(HOURLY_PLACEMENT_REFRESH, hour_key(hour))
    fresh = store.read(f"SELECT * FROM read_parquet('{path}')")
    assert set(fresh.customer_id) <= touched and len(fresh) > 0
    nightly = refreshed["nightly"].read(
        "SELECT customer_id, placement, recommendation_rank AS rank, product_id FROM customer_placement_recommendations",
        inputs=["customer_placement_recommendations"],
    )
    database = ServingDatabase(refreshed["resources"]["serving"].url)
    try:
        with database.engine.connect() as conn:
            version = conn.execute(select(serving_state.c.current_version)).scalar()
            pl = customer_placement_lists
            served = pd.DataFrame(conn.execute(
                select(pl.c.customer_id, pl.c.placement, pl.c.rank, pl.c.product_id).where(pl.c.version == version)
            ).all(), columns=["customer_id", "placement", "rank", "product_id"])
    finally:
        database.dispose()
    key = ["customer_id", "placement", "rank"]

    def of(frame: pd.DataFrame, inside: bool) -> pd.DataFrame:
        chosen = frame[frame.customer_id.isin(touched) == inside]
        return chosen[[*key, "product_id"]].sort_values(key).reset_index(drop=True)

    expected_fresh = fresh.rename(columns={"recommendation_rank": "rank"})
    pd.testing.assert_frame_equal(of(served, True), of(expected_fresh, True), check_dtype=False)
    pd.testing.assert_frame_equal(of(served, False), of(nightly, False), check_dtype=False)
