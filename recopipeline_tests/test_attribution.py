"""Attribution: purchases recorded with the answer's id or joined back from the orders after the last click, the
rates per placement, variant and type, the A/B readout's interval, and serving databases from before purchases."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg
import duckdb
import pandas as pd
import pytest
from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError

from recopipeline.lib.tuning import Tuning
from recopipeline.lib.variants import Experiment
from recopipeline.serving import ServingDatabase
from recopipeline.serving.attribution import (
    attributed_purchases,
    attribution_table,
    difference_interval,
    read_feedback,
    wilson_interval,
)
from recopipeline.serving.database import utcnow
from recopipeline.serving.feedback import record_feedback, record_impressions
from recopipeline.serving.schema import recommendation_feedback
from recopipeline_tests.conftest import put, resources_for, rows
from recopipeline_tests.serving_support import POSTGRES_URL, drop_schema, fresh_schema, publish_generation

T0 = datetime(2026, 10, 1, 12, 0)
HOUR = timedelta(hours=1)
AB = Experiment.parse('{"control": {"share": 0.5}, "treatment": {"share": 0.5}}', "ab-test")


def answer(customer: str, products: list[str], recommendation_id: str, placement: str | None = None,
           variant: str = "control", version: int | None = 1, kind: str = "ease") -> dict:
    """A read-API answer as record_impressions reads it."""
    shown = {"recommendation_id": recommendation_id, "customer_id": customer, "variant": variant, "version": version,
             "recommendations": [{"rank": rank, "product_id": product, "recommendation_type": kind}
                                 for rank, product in enumerate(products, start=1)]}
    return shown if placement is None else {**shown, "placement": placement}


def click(db, customer, product, at, recommendation_id, **details):
    return record_feedback(db, customer, product, "click", at=at, recommendation_id=recommendation_id,
                           variant=details.pop("variant", "control"), version=details.pop("version", 1),
                           recommendation_type=details.pop("recommendation_type", "ease"), **details)


def orders_con(lines: list[tuple[str, str, str, datetime, float]]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with `orders` (order_id, customer_id, product_id, order_timestamp, line_value)."""
    con = duckdb.connect()
    frame = pd.DataFrame(lines, columns=["order_id", "customer_id", "product_id", "order_timestamp", "line_value"])
    con.register("order_lines", frame.astype({"order_timestamp": "datetime64[us]"}))
    con.sql("CREATE TABLE orders AS SELECT * FROM order_lines")
    return con


@pytest.fixture(name="db")
def db_fixture(tmp_path):
    database = ServingDatabase(f"sqlite:///{tmp_path / 'serving.db'}")
    yield database
    database.dispose()


def test_the_difference_interval_of_a_hand_computed_case():
    # Wilson: 50/1000 -> 0.051722 ± 0.013592, 70/1000 -> 0.071646 ± 0.015869 (centre (x + z²/2)/(n + z²))
    assert wilson_interval(50, 1000) == pytest.approx((0.038130, 0.065314), abs=1e-6)
    assert wilson_interval(70, 1000) == pytest.approx((0.055777, 0.087515), abs=1e-6)
    # Newcombe: 0.02 − √((0.07 − 0.055777)² + (0.065314 − 0.05)²), 0.02 + √((0.087515 − 0.07)² + (0.05 − 0.038130)²)
    interval = difference_interval(70, 1000, 50, 1000)
    assert interval.difference == pytest.approx(0.02)
    assert (interval.low, interval.high) == pytest.approx((-0.000900, 0.041158), abs=1e-6)
    # (Wald would give 0.02 ± 1.96·√(0.07·0.93/1000 + 0.05·0.95/1000) = (−0.000798, 0.040798))
    none = difference_interval(0, 20, 0, 20)  # no hits on either side: an interval around 0, not a point
    assert none.difference == 0 and none.low < 0 < none.high
    assert difference_interval(1, 0, 1, 10) is None and difference_interval(3, 2, 1, 10) is None


def test_an_order_goes_to_the_last_click_on_its_product_within_the_window(db):
    click(db, "C1", "P1", T0, "a", placement="home")
    click(db, "C1", "P1", T0 + 2 * HOUR, "b", placement="product_page")  # the last click before the orders
    click(db, "C2", "P2", T0, "c")  # ordered a minute after the window
    click(db, "C3", "P3", T0, "d")  # ordered before the click
    click(db, "C6", "P6", T0, "e")  # another customer orders it
    feedback = read_feedback(db, since=T0 - HOUR)
    con = orders_con([
        ("O1", "C1", "P1", T0 + 3 * HOUR, 30.0),
        ("O2", "C1", "P1", T0 + 100 * HOUR, 10.0),  # again within 168 h of the last click: the same purchase
        ("O3", "C1", "P9", T0 + 3 * HOUR, 99.0),  # a product never clicked
        ("O4", "C2", "P2", T0 + 168 * HOUR + timedelta(minutes=1), 20.0),
        ("O5", "C3", "P3", T0 - HOUR, 20.0),
        ("O6", "C7", "P6", T0 + HOUR, 20.0),
    ])
    purchases = attributed_purchases(con, feedback.touches, window_hours=168, match_hours=24)
    assert purchases[["customer_id", "product_id", "answer", "placement", "order_lines", "revenue"]].values.tolist() \
        == [["C1", "P1", "b", "product_page", 2, 40.0]]
    assert attributed_purchases(con, feedback.touches, window_hours=169, match_hours=24).customer_id.tolist() \
        == ["C1", "C2"]


def test_a_reported_purchase_counts_without_an_order_and_once_with_one(db):
    click(db, "C4", "P4", T0, "d")
    record_feedback(db, "C4", "P4", "purchase", at=T0 + HOUR, recommendation_id="d", variant="control",
                    recommendation_type="ease", version=1)  # no revenue: the order line's value
    record_feedback(db, "C5", "P5", "purchase", at=T0, recommendation_id="f", revenue=12.5, variant="control",
                    recommendation_type="ease", version=1)  # never clicked, never in the orders
    click(db, "C8", "P8", T0, "g")
    record_feedback(db, "C8", "P8", "purchase", at=T0 + HOUR, recommendation_id="g", revenue=7,
                    variant="control", recommendation_type="ease", version=1)
    con = orders_con([
        ("O1", "C4", "P4", T0 + 1.5 * HOUR, 25.0),
        ("O2", "C8", "P8", T0 + 2 * HOUR, 8.0),  # reported (7.0 counts, not the line's 8.0)
        ("O3", "C8", "P8", T0 + 50 * HOUR, 3.0),  # a second order after the click: the same purchase, more revenue
    ])
    purchases = attributed_purchases(con, read_feedback(db, since=T0 - HOUR).touches, 168, 24)
    assert purchases[["customer_id", "answer", "reported", "order_lines", "revenue"]].values.tolist() == [
        ["C4", "d", 1, 0, 25.0], ["C5", "f", 1, 0, 12.5], ["C8", "g", 1, 1, 10.0]]


def test_rates_per_placement_variant_and_type(db):
    record_impressions(db, answer("C1", ["P1", "P2", "P3", "P4"], "a", placement="home"), at=T0)
    record_impressions(db, answer("C1", ["P1", "P5"], "b", placement="product_page", kind="complementary"), at=T0)
    record_impressions(db, answer("C2", ["P1", "P2"], "c"), at=T0)  # an answer without a placement: home
    record_feedback(db, "C1", "P1", "click", at=T0 + HOUR, recommendation_id="b", variant="control",
                    recommendation_type="complementary", version=1)  # placement from its answer's impressions
    click(db, "C1", "P2", T0 + HOUR, "a", placement="home")
    click(db, "C2", "P1", T0 + HOUR, "c")
    con = orders_con([("O1", "C1", "P1", T0 + 2 * HOUR, 40.0), ("O2", "C2", "P1", T0 + 3 * HOUR, 10.0)])
    feedback = read_feedback(db, since=T0 - HOUR)
    table = attribution_table(feedback, attributed_purchases(con, feedback.touches, 168, 24))
    shown = table.set_index(["dimension", "value"])
    assert shown.loc[("placement", "home"), ["impressions", "clicks", "purchases", "revenue"]].tolist() == [6, 2, 1, 10.0]
    assert shown.loc[("placement", "product_page"), ["impressions", "clicks", "purchases", "revenue"]].tolist() \
        == [2, 1, 1, 40.0]
    assert shown.loc[("placement", "home"), "ctr"] == pytest.approx(2 / 6)
    assert shown.loc[("placement", "product_page"), "conversion"] == pytest.approx(1.0)
    assert shown.loc[("variant", "control"), ["impressions", "clicks", "purchases", "revenue"]].tolist() \
        == [8, 3, 2, 50.0]
    assert shown.loc[("variant", "control"), "purchases_per_impression"] == pytest.approx(2 / 8)
    assert shown.loc[("recommendation_type", "complementary"), ["impressions", "clicks", "purchases"]].tolist() \
        == [2, 1, 1]
    assert shown.loc[("recommendation_type", "ease"), "conversion"] == pytest.approx(0.5)


def test_the_ab_readout_compares_each_variant_with_the_control_of_its_experiment(db):
    version = publish_generation(db, "one", experiment=AB).version
    for variant, clicks, bought in (("control", 50, 5), ("treatment", 70, 14)):
        for n in range(20):  # 20 answers of 50 products: 1000 impressions
            record_impressions(db, answer(f"{variant}{n}", [f"P{i}" for i in range(50)], f"{variant}-{n}",
                                          placement="home", variant=variant, version=version), at=T0)
        for n in range(clicks):
            click(db, f"{variant}{n % 20}", f"P{n // 20}", T0 + HOUR, f"{variant}-{n % 20}", variant=variant,
                  version=version)
        for n in range(bought):
            record_feedback(db, f"{variant}{n % 20}", f"P{n // 20}", "purchase", at=T0 + 2 * HOUR, revenue=1.0,
                            recommendation_id=f"{variant}-{n % 20}", variant=variant, version=version,
                            recommendation_type="ease")
    feedback = read_feedback(db, since=T0 - HOUR)
    table = attribution_table(feedback, attributed_purchases(orders_con([]), feedback.touches, 168, 24))
    ab = table[table.dimension == "ab"].set_index("value")
    assert list(ab.index) == ["control", "treatment"] and set(ab.experiment) == {"ab-test"}
    assert set(ab.control) == {"control"} and pd.isna(ab.loc["control", "ctr_diff"])
    treatment = ab.loc["treatment"]
    assert treatment[["impressions", "clicks", "purchases"]].tolist() == [1000, 70, 14]
    assert treatment.ctr_diff == pytest.approx(0.02)
    assert (treatment.ctr_diff_low, treatment.ctr_diff_high) == pytest.approx((-0.000900, 0.041158), abs=1e-6)
    conversion = difference_interval(14, 70, 5, 50)  # 0.2 − 0.1
    assert treatment.conversion_diff == pytest.approx(0.1)
    assert (treatment.conversion_diff_low, treatment.conversion_diff_high) == pytest.approx(
        (conversion.low, conversion.high))
    assert conversion.low < 0.1 < conversion.high


def test_the_asset_writes_the_table_and_plots_the_numbers(definitions, warehouse, tmp_path):
    resources = resources_for(warehouse)
    db = resources["serving"].database()
    try:
        version = publish_generation(db, "one", experiment=AB).version
        at = utcnow() - timedelta(days=2)
        for variant, customer in (("control", "C00001"), ("treatment", "C00002")):
            record_impressions(db, answer(customer, ["P0001", "P0002"], f"id-{variant}", placement="home",
                                          variant=variant, version=version), at=at)
        click(db, "C00001", "P0001", at + HOUR, "id-control", version=version)
        click(db, "C00002", "P0002", at + HOUR, "id-treatment", variant="treatment", version=version)
    finally:
        db.dispose()
    put(warehouse, "orders", rows("orders", [
        {"order_id": "O1", "customer_id": "C00001", "product_id": "P0001", "order_timestamp": at + 2 * HOUR,
         "quantity": 2, "line_value": 24.0},
        {"order_id": "O2", "customer_id": "C00002", "product_id": "P0002", "order_timestamp": at + 200 * HOUR,
         "quantity": 1, "line_value": 5.0},  # beyond the default 168 hours
    ]))
    result = dg.materialize(list(definitions.assets), selection=["recommendation_attribution"], resources=resources)
    assert result.success
    (materialization,) = result.asset_materializations_for_node("recommendation_attribution")
    numbers = {key: value.value for key, value in materialization.metadata.items()}
    assert numbers["impressions"] == 4 and numbers["clicks"] == 2 and numbers["purchases"] == 1
    assert numbers["revenue/placement/home"] == 24.0 and numbers["conversion/variant/control"] == 1.0
    assert numbers["conversion/variant/treatment"] == 0.0 and numbers["ctr/type/ease"] == 0.5
    assert numbers["ab/experiment"] == "ab-test" and numbers["ab/treatment/ctr_diff"] == 0.0
    assert numbers["ab/treatment/conversion_diff"] == -1.0
    # 0/1 against 1/1: Wilson (0, z²/(1 + z²) = 0.793465) and (0.206535, 1), so −1 and −1 + √2 × 0.793465
    assert numbers["ab/treatment/conversion_diff_low"] == pytest.approx(-1.0)
    assert numbers["ab/treatment/conversion_diff_high"] == pytest.approx(0.122109, abs=1e-6)
    assert isinstance(materialization.metadata["ab/treatment/ctr_diff_low"], dg.FloatMetadataValue)
    written = warehouse.read("SELECT dimension, value, purchases, revenue FROM recommendation_attribution "
                             "WHERE dimension = 'variant' ORDER BY value", ["recommendation_attribution"])
    assert written.values.tolist() == [["variant", "control", 1, 24.0], ["variant", "treatment", 0, 0.0]]
    assert dg.materialize(list(definitions.assets), selection=["recommendation_attribution"], resources={
        **resources, "tuning": type(resources["tuning"])(attribution_window_hours=240)}).success


@pytest.mark.parametrize(
    ("event", "details", "message"),
    [
        ("click", {"revenue": 5.0}, "revenue is recorded with purchase events only"),
        ("purchase", {"revenue": -1.0}, "revenue must be a finite number >= 0"),
        ("purchase", {"revenue": float("nan")}, "revenue must be a finite number >= 0"),
        ("purchase", {"revenue": True}, "revenue must be a finite number >= 0"),
        ("purchase", {"placement": ""}, "placement must be a non-empty string"),
        ("refund", {}, "event must be one of impression, click, purchase"),
    ],
)
def test_invalid_feedback_is_a_clear_value_error(db, event, details, message):
    with pytest.raises(ValueError, match=message):
        record_feedback(db, "C1", "P1", event, **details)


def test_a_tuning_window_below_one_hour_is_refused():
    with pytest.raises(ValueError, match="attribution_window_hours must be >= 1"):
        Tuning(attribution_window_hours=0)


def old_feedback_table(metadata: MetaData) -> Table:
    """`recommendation_feedback` as the schema before purchases created it."""
    return Table(
        "recommendation_feedback", metadata,
        Column("feedback_id", Integer, primary_key=True, autoincrement=True),
        Column("event", String, nullable=False),
        Column("customer_id", String, nullable=False),
        Column("product_id", String, nullable=False),
        Column("variant", String, nullable=False),
        Column("recommendation_type", String, nullable=False),
        Column("version", Integer),
        Column("rank", Integer),
        Column("recorded_at", DateTime, nullable=False),
        Column("recommendation_id", String),
        CheckConstraint("event IN ('impression', 'click')", name="feedback_event"),
        Index("recommendation_feedback_recorded_at", "recorded_at"),
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_database_from_before_purchases_accepts_them_once_opened(tmp_path, backend):
    schema = fresh_schema() if backend == "postgres" else None
    url = POSTGRES_URL if schema else f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    if schema:
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine = engine.execution_options(schema_translate_map={None: schema})
    old = old_feedback_table(MetaData())
    old.create(engine)
    with engine.begin() as conn:
        conn.execute(insert(old), [{"feedback_id": 7, "event": "click", "customer_id": "C1", "product_id": "P1",
                                    "variant": "control", "recommendation_type": "ease", "recorded_at": T0}])
        with pytest.raises(IntegrityError):  # the old constraint
            with conn.begin_nested():
                conn.execute(insert(old), [{"event": "purchase", "customer_id": "C1", "product_id": "P1",
                                            "variant": "control", "recommendation_type": "ease", "recorded_at": T0}])
    engine.dispose()
    reopened = ServingDatabase(url, schema=schema)
    try:
        record_feedback(reopened, "C1", "P1", "purchase", revenue=9.5, placement="cart", variant="control",
                        recommendation_type="ease", version=1, at=T0 + HOUR, recommendation_id="r1")
        fb = recommendation_feedback
        with reopened.engine.connect() as conn:
            kept = conn.execute(select(fb.c.feedback_id, fb.c.event, fb.c.revenue, fb.c.placement)
                                .order_by(fb.c.recorded_at)).all()
            assert tuple(kept[0]) == (7, "click", None, None)  # the old row, with its id
            assert [tuple(r)[1:] for r in kept[1:]] == [("purchase", 9.5, "cart")]
            with pytest.raises(IntegrityError):  # the new constraint still refuses what is no event
                conn.execute(insert(fb), [{"event": "refund", "customer_id": "C1", "product_id": "P1",
                                           "variant": "control", "recommendation_type": "ease", "recorded_at": T0}])
            conn.rollback()
        indexes = inspect(reopened.engine).get_indexes("recommendation_feedback", schema=schema)
        assert "recommendation_feedback_recorded_at" in {index["name"] for index in indexes}
        ServingDatabase(url, schema=schema).dispose()  # opening again changes nothing
    finally:
        reopened.dispose()
        if schema:
            drop_schema(schema)


def test_the_mcp_tool_records_a_purchase_with_its_revenue_and_placement(db):
    import anyio
    from mcp import Client

    from recopipeline.mcp_server import build_server
    from recopipeline.serving import Recommender

    publish_generation(db, "one")

    async def main() -> None:
        async with Client(build_server(Recommender(db, cache_ttl=0), impressions=False)) as client:
            tool = next(t for t in (await client.list_tools()).tools if t.name == "record_feedback")
            assert tool.input_schema["properties"]["event"]["enum"] == ["impression", "click", "purchase"]
            bought = await client.call_tool("record_feedback", {
                "customer_id": "C00001", "product_id": "P0001", "event": "purchase", "revenue": 19.9,
                "placement": "cart", "recommendation_id": "abc"})
            assert not bought.is_error
            assert {k: bought.structured_content[k] for k in ("event", "revenue", "placement", "variant")} == {
                "event": "purchase", "revenue": 19.9, "placement": "cart", "variant": "control"}
            refused = await client.call_tool("record_feedback", {
                "customer_id": "C00001", "product_id": "P0001", "event": "click", "revenue": 5})
            assert refused.is_error and "purchase events only" in refused.content[0].text

    anyio.run(main)
    feedback = read_feedback(db, since=utcnow() - timedelta(hours=1))
    assert feedback.touches[["event", "revenue", "placement"]].values.tolist() == [["purchase", 19.9, "cart"]]


def test_without_feedback_the_asset_writes_an_empty_table(definitions, warehouse):
    put(warehouse, "orders", rows("orders", [{"order_id": "O1", "customer_id": "C1", "product_id": "P1",
                                              "order_timestamp": T0}]))
    result = dg.materialize(list(definitions.assets), selection=["recommendation_attribution"],
                            resources=resources_for(warehouse))
    assert result.success
    (materialization,) = result.asset_materializations_for_node("recommendation_attribution")
    assert materialization.metadata["dagster/row_count"].value == 0
    assert materialization.metadata["purchases"].value == 0 and "ab/experiment" not in materialization.metadata
    assert list(warehouse.read("SELECT * FROM recommendation_attribution", ["recommendation_attribution"]).columns)[:4] \
        == ["dimension", "value", "experiment", "control"]


def test_without_orders_the_asset_fails_and_says_so(definitions, warehouse):
    result = dg.materialize(list(definitions.assets), selection=["recommendation_attribution"],
                            resources=resources_for(warehouse), raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "upstream asset 'orders' has not been materialized" in failure.step_failure_data.error.message


def test_a_purchase_reported_twice_or_from_two_answers_counts_once():
    start = datetime(2026, 10, 1, 12)
    con = duckdb.connect()
    con.execute("CREATE TABLE orders AS SELECT 'O1' AS order_id, 'C1' AS customer_id, 'P1' AS product_id, "
                "TIMESTAMP '2026-10-01 12:30:00' AS order_timestamp, 40.0 AS line_value")

    def touch(number: int, event: str, answer: str, minutes: int) -> dict:
        return {"feedback_id": number, "event": event, "customer_id": "C1", "product_id": "P1", "variant": "control",
                "recommendation_type": "ease", "version": 1, "recommendation_id": answer, "placement": "home",
                "revenue": None, "recorded_at": start + timedelta(minutes=minutes)}

    retried = pd.DataFrame([touch(1, "click", "R1", 0), touch(2, "purchase", "R1", 31), touch(3, "purchase", "R1", 32)])
    two_answers = pd.DataFrame([touch(1, "click", "R1", 0), touch(2, "click", "R2", 1),
                                touch(3, "purchase", "R1", 31), touch(4, "purchase", "R2", 31)])
    for touches in (retried, two_answers):
        got = attributed_purchases(con, touches, window_hours=24, match_hours=24)
        assert got[["answer", "reported", "order_lines", "revenue"]].values.tolist() == [["R1", 1, 0, 40.0]]
