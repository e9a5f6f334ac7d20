"""Publishing through Dagster: real materializations of the pipeline with A/B variants, blocking checks, feedback,
and a Dagster instance on Postgres."""

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import create_engine, text

from recopipeline.defs.resources import ServingResource
from recopipeline.defs.stage import AS_OF_TAG
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse
from recopipeline.serving import Recommender, ServingDatabase, record_impressions
from recopipeline.serving.feedback import record_feedback
from recopipeline_tests.conftest import materialize_assets, resources_for
from recopipeline_tests.serving_support import POSTGRES_URL, drop_schema, fresh_schema

VARIANTS = json.dumps({"control": {"share": 0.5}, "popular_heavy": {"share": 0.5, "weight_popular": 50.0}})
SALT = "test-experiment"
TUNING = {"ab_variants": VARIANTS, "ab_salt": SALT}
EXPERIMENT = Tuning(**TUNING).experiment()
REPOSITORY = Path(__file__).parents[1]
PUBLISH_AND_TOP = [
    "product_recommendations", "candidate_features", "ranking_model", "learned_recommendations",
    "customer_top_recommendations", "published_recommendations",
]


def materialized(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    return {
        event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


@pytest.fixture(scope="module")
def built(definitions, tmp_path_factory, nightly):
    """The whole graph on synthetic xs data with two A/B variants, published to a new SQLite serving database.

    A copy of the session's nightly rebuild (its input too: feedback clicks are written into it), blended again
    with the variants as of the same time.
    """
    root = tmp_path_factory.mktemp("publish")
    store = nightly.copy_to(root, serving=False, inputs=True)
    resources = nightly.resources(store, str(root / "input"), **TUNING)
    result = dg.materialize(
        list(definitions.assets), selection=PUBLISH_AND_TOP, resources=resources,
        tags={AS_OF_TAG: nightly.hour.isoformat()},
    )
    assert result.success
    return store, resources, materialized(result), nightly.hour


def test_each_customer_is_blended_with_the_variant_its_hash_assigns(built):
    store, _, _, _ = built
    top = store.read(
        "SELECT customer_id, variant, count(*) FILTER (WHERE recommendation_type = 'popular') / count(*) AS popular "
        "FROM customer_top_recommendations GROUP BY ALL",
        inputs=["customer_top_recommendations"],
    )
    assert len(top) == top.customer_id.nunique()  # one variant per customer
    assert all(variant == EXPERIMENT.assign(customer) for customer, variant in zip(top.customer_id, top.variant))
    assert top.variant.value_counts().min() >= 60  # about half of 200 customers each
    share = top.groupby("variant").popular.mean()
    assert share["popular_heavy"] > 0.8 > share["control"]  # the variants really are different blends


def test_published_answers_equal_the_warehouse_tables(built):
    store, resources, metadata, _ = built
    published = metadata["published_recommendations"]
    assert published["serving_version"] == 1 and "False" not in published["audit"]
    reader = Recommender(resources["serving"].database(), cache_ttl=0)
    top = store.read(
        "SELECT customer_id, variant, product_id FROM customer_top_recommendations "
        "ORDER BY customer_id, recommendation_rank",
        inputs=["customer_top_recommendations"],
    )
    for customer, rows in list(top.groupby("customer_id"))[:25]:
        answer = reader.recommend(customer, limit=50)
        assert [item["product_id"] for item in answer["recommendations"]] == list(rows.product_id)
        assert answer["variant"] == rows.variant.iloc[0] and answer["cold_start"] is False

    popular = store.read(
        "SELECT product_id FROM product_popularity JOIN products USING (product_key) "
        "WHERE segment = 'all' AND popularity_rank <= 20 ORDER BY popularity_rank",
        inputs=["product_popularity", "products"],
    )
    newcomer = reader.recommend("not-a-customer-yet", limit=50)
    assert newcomer["cold_start"] and newcomer["variant"] == EXPERIMENT.assign("not-a-customer-yet")
    assert [item["product_id"] for item in newcomer["recommendations"]] == list(popular.product_id)

    complements = store.read(
        "SELECT a.product_id AS product_id_1, p.product_id AS product_id_2 FROM complementary_products AS c "
        "JOIN products AS a ON a.product_key = c.product_key_1 "
        "JOIN products AS p ON p.product_key = c.product_key_2 AND p.is_active AND p.stock_quantity > 0 "
        "ORDER BY 1, complementary_rank",
        inputs=["complementary_products", "products"],
    )
    product, rows = next(iter(complements.groupby("product_id_1")))
    related = reader.related_products(product, "complementary", limit=50)
    assert [item["product_id"] for item in related] == list(rows.product_id_2)[:20]

    trending = store.read(
        "SELECT product_id FROM product_trending JOIN products USING (product_key) ORDER BY trending_rank",
        inputs=["product_trending", "products"],
    )
    assert len(trending) > 0
    served_trending = reader.trending("C000001", limit=50)
    assert [item["product_id"] for item in served_trending] == list(trending.product_id)
    assert served_trending[0]["score"] == 1.0 and served_trending[0]["evidence"].startswith("trending:")

    summary = store.read("SELECT * FROM published_recommendations", inputs=["published_recommendations"])
    assert set(summary.variant) == {"control", "popular_heavy"}
    assert set(summary.list) == {"customers", "cold_start", "trending"}
    assert summary[summary.list == "customers"].rows.sum() == len(top)


def test_a_failing_blocking_check_skips_publishing(built, definitions, tmp_path):
    store, _, _, as_of = built
    copy = Warehouse(root=str(tmp_path / "warehouse"), memory_limit="2GB", threads=2)
    shutil.copytree(store.root, copy.root)
    good = resources_for(copy, **TUNING)
    assert dg.materialize(list(definitions.assets), selection=["published_recommendations"], resources=good).success
    served = Recommender(good["serving"].database(), cache_ttl=0)
    before = served.recommend("C000001", limit=50)

    # Without the popular fill, customers without any affinity get no recommendation: a blocking check fails.
    starving = resources_for(copy, weight_popular=0.0)
    result = dg.materialize(
        list(definitions.assets), selection=PUBLISH_AND_TOP, resources=starving, raise_on_error=False,
        tags={AS_OF_TAG: as_of.isoformat()},
    )
    failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed and all(e.asset_key.to_user_string() in PUBLISH_AND_TOP for e in failed)
    assert "published_recommendations" not in materialized(result)
    after = served.recommend("C000001", limit=50)
    assert after.pop("recommendation_id") != before.pop("recommendation_id")  # a new answer ...
    assert after == before  # ... of the same list: still version 1


def test_feedback_metrics_and_clicks_flowing_back_as_interactions(built, definitions):
    store, resources, _, _ = built
    database = resources["serving"].database()
    reader = Recommender(database, cache_ttl=0)
    customers = store.read("SELECT customer_id FROM customers ORDER BY customer_id LIMIT 4", inputs=["customers"])
    answers = [reader.recommend(customer, limit=5) for customer in customers.customer_id]
    for answer in answers:
        record_impressions(database, answer)
    clicked = [(a["customer_id"], a["recommendations"][0]["product_id"]) for a in answers[:2]]
    for customer, product in clicked:
        record_feedback(database, customer, product, "click", rank=1)

    result = dg.materialize(
        list(definitions.assets), selection=["recommendation_feedback_metrics", "feedback_clicks"], resources=resources
    )
    metrics = materialized(result)["recommendation_feedback_metrics"]
    assert metrics["impressions"] == 20 and metrics["clicks"] == 2 and metrics["ctr"] == pytest.approx(0.1)
    for variant in {a["variant"] for a in answers}:
        shown = [a for a in answers if a["variant"] == variant]
        clicks = sum(1 for customer, _ in clicked if customer in {a["customer_id"] for a in shown})
        assert metrics[f"ctr/variant/{variant}"] == pytest.approx(clicks / (5 * len(shown)))
    first_type = answers[0]["recommendations"][0]["recommendation_type"]
    assert metrics[f"clicks/type/{first_type}"] >= 1
    files = materialized(result)["feedback_clicks"]["input_files"].splitlines()
    assert len(files) == 1 and "/customer_interactions/feedback_clicks_" in files[0]

    assert materialize_assets(list(definitions.assets), selection=["customer_interactions"], resources=resources).success
    events = store.read(
        "SELECT customer_id, product_id, interaction_type FROM customer_interactions WHERE event_id LIKE 'feedback-%' "
        "ORDER BY event_id",
        inputs=["customer_interactions"],
    )
    assert list(zip(events.customer_id, events.product_id)) == clicked
    assert set(events.interaction_type) == {"click"}


def test_dagster_instance_and_serving_database_on_postgres(built, definitions, tmp_path, monkeypatch):
    """The deployment configuration: Dagster's storage and the serving tables in the local Postgres."""
    store, _, _, _ = built
    schema = fresh_schema()
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(REPOSITORY / "recopipeline" / "deploy" / "postgres" / "dagster.yaml", home / "dagster.yaml")
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
        instance = dg.DagsterInstance.from_config(str(home))
        assert {type(s).__name__ for s in (instance.run_storage, instance.event_log_storage,
                                           instance.schedule_storage)} == {
            "PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"}
        resources = {**resources_for(store, **TUNING),
                     "serving": ServingResource(url=POSTGRES_URL, db_schema=schema)}
        result = dg.materialize(
            list(definitions.assets), selection=["published_recommendations"], resources=resources, instance=instance
        )
        assert result.success
        with engine.connect() as conn:
            runs = conn.execute(text(f'SELECT run_id, status FROM "{schema}".runs')).all()
            kinds = conn.execute(
                text(f'SELECT dagster_event_type, asset_key FROM "{schema}".event_logs WHERE run_id = :run'),
                {"run": result.run_id},
            ).all()
        assert runs == [(result.run_id, "SUCCESS")]
        assert ("ASSET_MATERIALIZATION", '["published_recommendations"]') in {tuple(k) for k in kinds}
        assert instance.get_latest_materialization_event(dg.AssetKey("published_recommendations")) is not None
        instance.dispose()

        on_postgres = Recommender(ServingDatabase(POSTGRES_URL, schema=schema), cache_ttl=0)
        on_sqlite = Recommender(resources_for(store)["serving"].database(), cache_ttl=0)
        for customer in ("C000001", "C000002", "someone-new"):
            a, b = on_postgres.recommend(customer, limit=50), on_sqlite.recommend(customer, limit=50)
            assert a["recommendations"] == b["recommendations"] and a["variant"] == b["variant"]
        on_postgres.db.dispose()
    finally:
        engine.dispose()
        drop_schema(schema)
