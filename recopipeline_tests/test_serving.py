"""The read API and the publication life cycle on a real SQLite file and a real Postgres schema."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from recopipeline.lib.tuning import STRATEGIES
from recopipeline.serving import (
    COLD_START,
    NotPublishedError,
    PublishError,
    Recommender,
    ServingDatabase,
    history,
    publish,
    publish_customers,
    rollback,
)
from recopipeline.serving.schema import customer_recommendations, publications, recommendation_feedback
from recopipeline_tests.serving_support import database_fixture, generation, publish_generation  # noqa: F401

REPOSITORY = Path(__file__).parents[1]
INJECTIONS = [
    "x' OR '1'='1",
    "'; DROP TABLE customer_recommendations; --",
    'C00001" OR ""="',
    "C00001' --",
    "C00001; DELETE FROM serving_state",
]


def names(answer: dict) -> set[str]:
    return {item["product_name"] for item in answer["recommendations"]}


def rows_of(db, version: int) -> int:
    with db.engine.connect() as conn:
        return conn.execute(
            select(func.count())
            .select_from(customer_recommendations)
            .where(customer_recommendations.c.version == version)
        ).scalar()


def test_customer_gets_own_rows_and_unknown_customer_the_cold_start_list(database):
    publish_generation(database, "one")
    reader = Recommender(database, cache_ttl=0)
    answer = reader.recommend("C00001", limit=3)
    assert answer["cold_start"] is False and answer["variant"] == "control" and answer["version"] == 1
    assert [item["rank"] for item in answer["recommendations"]] == [1, 2, 3]
    scores = [item["score"] for item in answer["recommendations"]]
    assert scores == sorted(scores, reverse=True) and names(answer) == {"one"}

    unknown = reader.recommend("somebody-new")
    assert unknown["cold_start"] is True and unknown["variant"] == "control"
    assert len(unknown["recommendations"]) == 5
    assert {item["recommendation_type"] for item in unknown["recommendations"]} == {"popular"}


def test_type_filter_and_limit(database):
    publish_generation(database, "one", per_customer=9)
    reader = Recommender(database, cache_ttl=0)
    collaborative = reader.recommend("C00002", recommendation_type="collaborative")
    assert len(collaborative["recommendations"]) == 3
    assert {item["recommendation_type"] for item in collaborative["recommendations"]} == {"collaborative"}
    assert len(reader.recommend("C00002", limit=1)["recommendations"]) == 1
    assert len(reader.recommend("C00002", limit=50)["recommendations"]) == 9
    assert reader.recommend("C00002", recommendation_type="category_preference")["recommendations"] == []
    assert reader.recommend("unknown", recommendation_type="popular")["recommendations"]


def test_every_strategy_of_the_blend_is_a_type_filter(database):
    customer_batches, relation_batches, expected = generation("one", per_customer=len(STRATEGIES))
    for row in (row for batch in customer_batches for row in batch if row["customer_id"] != COLD_START):
        row["recommendation_type"] = STRATEGIES[row["rank"] - 1]  # one row of every strategy per customer
    publish(database, customer_batches, relation_batches, expected)
    reader = Recommender(database, cache_ttl=0)
    for strategy in STRATEGIES:
        chosen = reader.recommend("C00004", recommendation_type=strategy)["recommendations"]
        assert [item["recommendation_type"] for item in chosen] == [strategy]
    assert len(reader.recommend("C00004")["recommendations"]) == len(STRATEGIES)


def test_viewed_product_blends_in_its_complements_and_similar_products(database):
    publish_generation(database, "one")
    reader = Recommender(database, cache_ttl=0)
    plain = {item["product_id"] for item in reader.recommend("C00003", limit=50)["recommendations"]}
    viewing = reader.recommend("C00003", product_id="P0010", limit=50)
    blended = {item["product_id"]: item for item in viewing["recommendations"]}
    similar = {"P0013", "P0016", "P0019"}  # generation(): similar products of P0010
    complementary = {"P0021", "P0032", "P0043"}
    assert similar | complementary | plain == set(blended)  # bought-together lists are not blended in
    assert "P0010" not in blended
    assert {blended[p]["recommendation_type"] for p in complementary} == {"complementary"}
    assert blended["P0021"]["evidence"] == "complementary:P0010"
    assert {blended[p]["recommendation_type"] for p in similar - plain} == {"affinity_similar"}
    scores = [item["score"] for item in viewing["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    assert reader.related_products("P0010", "bought_together", limit=2)[0]["rank"] == 1


def test_a_cart_blends_in_what_goes_with_its_products_and_leaves_them_out(database):
    publish_generation(database, "one")
    reader = Recommender(database, cache_ttl=0)
    plain = reader.recommend("C00003", limit=50)["recommendations"]
    own = {item["product_id"]: item for item in plain}
    # generation(): P0010's complements and bought-together products are both P0021, P0032, P0043 (scores 0.9,
    # 0.45, 0.3); P0020's both P0031, P0042, P0053
    answer = reader.recommend("C00003", limit=50, cart=["P0020", "P0010", "P0010"])
    got = {item["product_id"]: item for item in answer["recommendations"]}
    assert answer["cart"] == ["P0010", "P0020"]
    assert not {"P0010", "P0020"} & set(got)
    goes_with = {"P0021", "P0032", "P0043", "P0031", "P0042", "P0053"}
    assert goes_with <= set(got) and set(got) == goes_with | (set(own) - {"P0010", "P0020"})
    # both lists of P0010 name P0021: 0.9 + 0.9 added, the cart product named once
    assert got["P0021"]["evidence"].endswith("cart:P0010") and "cart:P0010;cart" not in got["P0021"]["evidence"]
    assert got["P0021"]["score"] == pytest.approx(own.get("P0021", {"score": 0})["score"] + 1.8)
    scores = [item["score"] for item in answer["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(ValueError, match="cart"):
        reader.recommend("C00003", cart="P0010")
    with pytest.raises(ValueError, match="cart"):
        reader.recommend("C00003", cart=[f"P{n}" for n in range(51)])


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": None}, "customer_id"),
        ({"customer_id": 42}, "customer_id"),
        ({"customer_id": "C1", "limit": 0}, "limit"),
        ({"customer_id": "C1", "limit": 51}, "limit"),
        ({"customer_id": "C1", "limit": "10"}, "limit"),
        ({"customer_id": "C1", "limit": True}, "limit"),
        ({"customer_id": "C1", "recommendation_type": "bestsellers"}, "recommendation_type"),
        ({"customer_id": "C1", "product_id": ""}, "product_id"),
        ({"customer_id": "x" * 257}, "customer_id"),
    ],
)
def test_invalid_arguments_are_a_clear_value_error(tmp_path, arguments, message):
    from recopipeline_tests.serving_support import sqlite_database

    reader = Recommender(sqlite_database(tmp_path), cache_ttl=0)
    with pytest.raises(ValueError, match=message) as raised:
        reader.recommend(**arguments)
    assert "\n" not in str(raised.value)


def test_sql_injection_strings_are_harmless(database):
    from recopipeline.serving.feedback import record_feedback

    publish_generation(database, "one")
    reader = Recommender(database, cache_ttl=0)
    for attack in INJECTIONS:
        answer = reader.recommend(attack, product_id=attack)
        assert answer["cold_start"] is True and len(answer["recommendations"]) == 5
        assert record_feedback(database, attack, attack, "click")["customer_id"] == attack
        with pytest.raises(ValueError):
            reader.recommend("C00001", recommendation_type=attack)
    assert reader.recommend("C00001")["cold_start"] is False
    assert rows_of(database, 1) == 50 * 5 + 5 + 3  # customers, cold start, trending
    with database.engine.connect() as conn:
        stored = conn.execute(
            select(recommendation_feedback.c.customer_id).order_by(recommendation_feedback.c.feedback_id)
        ).scalars().all()
    assert stored == INJECTIONS  # stored as given, never executed


def test_nothing_published_is_a_clear_error(database):
    with pytest.raises(NotPublishedError, match="nothing is published"):
        Recommender(database, cache_ttl=0).recommend("C00001")


def test_readers_see_one_complete_version_while_versions_are_published(database):
    publish_generation(database, "gen0", customers=400, per_customer=10)
    reader = Recommender(database, cache_ttl=0)
    seen: list[tuple[int, int, frozenset]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read_loop(offset: int) -> None:
        i = offset
        while not stop.is_set():
            customer = f"C{i % 400:05d}" if i % 5 else f"unknown-{i}"
            try:
                answer = reader.recommend(customer, product_id="P0010" if i % 2 else None, limit=50)
            except BaseException as error:  # any failure is a finding
                errors.append(error)
                return
            seen.append((answer["version"], len(answer["recommendations"]), frozenset(names(answer))))
            i += 1

    readers = [threading.Thread(target=read_loop, args=(k,)) for k in range(2)]
    for thread in readers:
        thread.start()
    tags = {1: "gen0"}
    for generation_number in range(1, 4):
        time.sleep(0.05)
        publication = publish_generation(
            database, f"gen{generation_number}", customers=400, per_customer=10, keep_versions=2
        )
        tags[publication.version] = f"gen{generation_number}"
    time.sleep(0.05)
    stop.set()
    for thread in readers:
        thread.join()
    assert not errors
    assert len(seen) > 50
    assert all(count > 0 for _, count, _ in seen), "a reader got an empty answer"
    assert all(found == {tags[version]} for version, _, found in seen), "a reader saw a mix of versions"
    assert len({version for version, _, _ in seen}) >= 2, "the readers never saw a switch"
    assert rows_of(database, 1) == 0 and rows_of(database, 2) == 0  # expired: only the last 2 versions are kept


def test_a_publish_that_fails_midway_on_a_constraint_keeps_the_old_version(database):
    publish_generation(database, "old")
    customer_batches, relation_batches, expected = generation("new")
    bad = dict(customer_batches[0][0])  # the same (customer, variant, rank) twice, in the last batch
    customer_batches[-1].append(bad)
    with pytest.raises(IntegrityError):
        publish(database, customer_batches, relation_batches, expected)
    reader = Recommender(database, cache_ttl=0)
    assert names(reader.recommend("C00001")) == {"old"}
    assert rows_of(database, 2) == 0  # the staged rows are gone
    failed = history(database)[0]
    assert failed["version"] == 2 and failed["status"] == "failed" and "UNIQUE" in failed["message"].upper()


def test_a_publish_that_fails_its_audit_keeps_the_old_version(database):
    publish_generation(database, "old", customers=50)
    customer_batches, relation_batches, expected = generation("new", customers=50)
    wrong = type(expected)(expected.customer_rows, expected.customers + 1, expected.relation_rows, expected.variants)
    with pytest.raises(PublishError, match="customers_match_warehouse"):
        publish(database, customer_batches, relation_batches, wrong)
    with pytest.raises(PublishError, match="no_sharp_shrink"):
        publish_generation(database, "shrunk", customers=10)
    without_cold_start = [[row for row in batch if row["customer_id"] != COLD_START] for batch in customer_batches]
    with pytest.raises(PublishError, match="cold_start_list_per_variant"):
        publish(database, without_cold_start, relation_batches, expected)
    assert names(Recommender(database, cache_ttl=0).recommend("C00001")) == {"old"}
    assert [entry["status"] for entry in history(database)] == ["failed", "failed", "failed", "live"]


KILLED_PUBLISH = """
import sys, time
from recopipeline.serving import ServingDatabase, publish
from recopipeline_tests.serving_support import generation
db = ServingDatabase(sys.argv[1], schema=sys.argv[2] or None)
customer_batches, relation_batches, expected = generation("doomed", customers=400, per_customer=10)
def slowly():
    for batch in customer_batches:
        yield batch
        print("staged", flush=True)
        time.sleep(5)
publish(db, slowly(), relation_batches, expected)
"""


def test_a_killed_publish_keeps_the_old_version_and_is_cleaned_up(database):
    publish_generation(database, "old", customers=400, per_customer=10)
    url = database.url.render_as_string(hide_password=False)
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUBLISH, url, database.schema or ""],
        cwd=REPOSITORY, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout.readline().strip() == "staged"
    finally:
        process.kill()
        process.wait()
    assert rows_of(database, 2) > 0  # it died with staged rows
    assert history(database)[0]["status"] == "staging"
    assert names(Recommender(database, cache_ttl=0).recommend("C00001")) == {"old"}

    publish_generation(database, "new", customers=400, per_customer=10)  # takes the lock the dead process held
    assert rows_of(database, 2) == 0
    statuses = {entry["version"]: (entry["status"], entry["message"]) for entry in history(database)}
    assert statuses[2][0] == "failed" and "abandoned" in statuses[2][1]
    assert statuses[3][0] == "live"
    assert names(Recommender(database, cache_ttl=0).recommend("C00001")) == {"new"}


def test_rollback_restores_the_previous_version_and_old_versions_expire(database):
    for tag in ("a", "b", "c", "d"):
        publish_generation(database, tag, keep_versions=3)
    reader = Recommender(database, cache_ttl=60, pointer_ttl=0)
    assert names(reader.recommend("C00001")) == {"d"}
    assert rows_of(database, 1) == 0  # a expired: d, c and b are kept

    assert rollback(database) == (4, 3)
    assert names(reader.recommend("C00001")) == {"c"}  # the cache follows the pointer
    assert rollback(database) == (3, 2)
    assert names(reader.recommend("C00001")) == {"b"}
    with pytest.raises(PublishError, match="no earlier version"):
        rollback(database)

    publish_generation(database, "e", keep_versions=3)
    assert names(reader.recommend("C00001")) == {"e"}
    assert rows_of(database, 3) == 0 and rows_of(database, 4) == 0  # rolled-back versions are removed


def test_cache_answers_until_the_ttl_ends_or_a_new_version_is_live(database):
    publish_generation(database, "one")
    cached = Recommender(database, cache_ttl=300, pointer_ttl=0)
    short = Recommender(database, cache_ttl=0.2, pointer_ttl=0)
    assert names(cached.recommend("C00001")) == names(short.recommend("C00001")) == {"one"}
    with database.engine.begin() as conn:  # change the live rows behind the API's back
        conn.execute(update(customer_recommendations).values(product_name="changed"))
    assert names(cached.recommend("C00001", limit=2)) == {"one"}  # limit and type apply to the cached entry
    assert cached.cache.hits == 1
    assert names(Recommender(database, cache_ttl=0).recommend("C00001")) == {"changed"}
    time.sleep(0.3)
    assert names(short.recommend("C00001")) == {"changed"}

    publish_generation(database, "two")
    assert names(cached.recommend("C00001")) == {"two"}


def test_a_customers_publication_withdraws_products_no_longer_available_from_the_product_lists(database):
    publish_generation(database, "one")
    reader = Recommender(database, cache_ttl=0)
    related = reader.related_products("P0000", "similar", limit=10)
    gone = related[0]["product_id"]
    fresh = [{"customer_id": "C00001", "variant": "control", "rank": 1, "product_id": "P0001", "product_name": "h",
              "recommendation_type": "collaborative", "score": 1.0, "evidence": None}]
    publish_customers(database, fresh, ["C00001"], unavailable=[gone])
    assert [r["product_id"] for r in reader.related_products("P0000", "similar", limit=10)] == \
        [r["product_id"] for r in related[1:]]
    assert gone not in [r["product_id"] for r in reader.recommend("C00002", product_id="P0000", limit=50)["recommendations"]
                        if r["recommendation_type"] == "affinity_similar" and r["evidence"] == "similar:P0000"]


def test_customers_publication_replaces_only_touched_customers_atomically(database):
    publish_generation(database, "one")
    reader = Recommender(database, cache_ttl=60, pointer_ttl=0)
    assert names(reader.recommend("C00001")) == {"one"}
    fresh = [
        {"customer_id": c, "variant": "control", "rank": r, "product_id": f"P01{r}", "product_name": "hourly",
         "recommendation_type": "collaborative", "score": 1 / r, "evidence": None}
        for c in ("C00001", "C00002") for r in (1, 2)
    ]
    result = publish_customers(database, fresh, ["C00001", "C00002"])
    assert result.version == 1 and result.revision == 2
    assert names(reader.recommend("C00001")) == {"hourly"}  # the cache saw the new revision
    assert len(reader.recommend("C00002")["recommendations"]) == 2
    assert names(reader.recommend("C00003")) == {"one"}

    with pytest.raises(PublishError, match="not listed"):
        publish_customers(database, fresh, ["C00001"])
    with pytest.raises(PublishError, match="served nothing"):
        publish_customers(database, fresh, ["C00001", "C00002", "C00003"])
    broken = [dict(row, product_name="broken") for row in fresh] + [dict(fresh[0], product_name="broken")]
    with pytest.raises(IntegrityError):
        publish_customers(database, broken, ["C00001", "C00002"])
    assert names(Recommender(database, cache_ttl=0).recommend("C00001")) == {"hourly"}  # all or nothing
    with database.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(publications)).scalar() == 2


def test_feedback_gives_click_through_rates_and_click_events(database):
    from recopipeline.serving import click_events, click_through_rates, record_impressions
    from recopipeline.serving.feedback import record_feedback

    publish_generation(database, "one")
    reader = Recommender(database, cache_ttl=0)
    for customer in ("C00001", "C00002"):
        assert record_impressions(database, reader.recommend(customer)) == 5
    first = reader.recommend("C00001")["recommendations"][0]
    clicked = record_feedback(database, "C00001", first["product_id"], "click", rank=1)
    assert clicked["recommendation_type"] == first["recommendation_type"] and clicked["variant"] == "control"
    record_feedback(database, "newcomer", "P9001", "click")
    with pytest.raises(ValueError, match="event"):
        record_feedback(database, "C00001", "P0001", "refund")

    rates = click_through_rates(database).set_index(["dimension", "value"])
    assert rates.loc[("variant", "control"), "impressions"] == 10
    assert rates.loc[("variant", "control"), "clicks"] == 2
    assert rates.loc[("variant", "control"), "ctr"] == pytest.approx(0.2)
    assert rates.loc[("recommendation_type", first["recommendation_type"]), "clicks"] == 1
    events = click_events(database)
    assert list(events.columns) == ["event_id", "customer_id", "product_id", "interaction_type",
                                    "interaction_timestamp", "session_id"]
    assert list(events.customer_id) == ["C00001", "newcomer"] and set(events.interaction_type) == {"click"}


def test_benchmark_publishes_a_version_and_times_reads(tmp_path):
    from recopipeline.serving import ServingDatabase
    from recopipeline.serving.bench import EXPERIMENT, bench_serving

    url = f"sqlite:///{tmp_path / 'bench.db'}"
    report = bench_serving(url, customers=300, products=100, count=300, threads=2)
    assert report["rows"] == 300 * 20 and report["relation_rows"] == 100 * 3 * 10
    assert report["cached"]["requests"] == report["uncached_threads"]["requests"] == 300
    assert report["cached"]["p50_ms"] < report["uncached"]["p50_ms"]
    reader = Recommender(ServingDatabase(url), cache_ttl=0)
    for customer in ("C0000000", "C0000001", "C0000299", "never-seen"):
        assert reader.recommend(customer)["variant"] == EXPERIMENT.assign(customer)  # DuckDB and Python agree


def test_every_answer_has_an_id_that_its_impressions_and_clicks_carry(database):
    import re

    from recopipeline.serving.feedback import record_feedback, record_impressions

    publish_generation(database, "one")
    reader = Recommender(database, cache_ttl=60)
    first, second = reader.recommend("C00001", limit=3), reader.recommend("C00001", limit=3)  # the second cached
    assert re.fullmatch("[0-9a-f]{32}", first["recommendation_id"])
    assert first["recommendation_id"] != second["recommendation_id"]
    assert record_impressions(database, first) == 3
    shown = first["recommendations"][1]["product_id"]
    record_feedback(database, "C00001", shown, "click", rank=2, recommendation_id=first["recommendation_id"])
    with database.engine.connect() as conn:
        rows = conn.execute(
            select(recommendation_feedback.c.event, recommendation_feedback.c.product_id)
            .where(recommendation_feedback.c.recommendation_id == first["recommendation_id"])
            .order_by(recommendation_feedback.c.feedback_id)
        ).all()
    assert [tuple(r) for r in rows] == [
        *(("impression", item["product_id"]) for item in first["recommendations"]), ("click", shown)]
    with pytest.raises(ValueError, match="recommendation_id"):
        record_feedback(database, "C00001", shown, "click", recommendation_id="")


def test_a_database_from_before_the_answer_ids_gets_the_column_when_opened(tmp_path):
    from recopipeline.serving.feedback import record_feedback

    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = ServingDatabase(url)
    with old.engine.begin() as conn:
        conn.exec_driver_sql('DROP INDEX "recommendation_feedback_answer"')  # made with the column, after it
        conn.exec_driver_sql('ALTER TABLE "recommendation_feedback" DROP COLUMN "recommendation_id"')
        conn.exec_driver_sql(
            "INSERT INTO recommendation_feedback (event, customer_id, product_id, variant, recommendation_type, "
            "recorded_at) VALUES ('click', 'C1', 'P1', 'control', 'ease', '2026-10-01 00:00:00')"
        )
    old.dispose()
    reopened = ServingDatabase(url)
    try:
        record_feedback(reopened, "C1", "P2", "click", variant="control", recommendation_type="ease", version=1,
                        recommendation_id="a1")
        with reopened.engine.connect() as conn:
            ids = conn.execute(select(recommendation_feedback.c.product_id, recommendation_feedback.c.recommendation_id)
                               .order_by(recommendation_feedback.c.feedback_id)).all()
        assert [tuple(r) for r in ids] == [("P1", None), ("P2", "a1")]
    finally:
        reopened.dispose()
