"""The serving database's roles on the local Postgres, as docs/deployment.md sets them up: a writer that owns the
serving schema publishes; a reader with exactly the grants of `deploy/postgres/serving_reader.sql` answers MCP
requests and records feedback, and cannot change what is served."""

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from mcp import Client
from sqlalchemy import create_engine, delete, func, insert, select, text, update
from sqlalchemy.exc import ProgrammingError

from recopipeline.mcp_server import build_server
from recopipeline.serving import Recommender, ServingDatabase, history, publish_customers, record_impressions, rollback
from recopipeline.serving.feedback import record_feedback
from recopipeline.serving.schema import (
    customer_recommendations,
    product_relations,
    publications,
    recommendation_feedback,
    serving_state,
)
from recopipeline_tests.serving_support import POSTGRES_URL, publish_generation

REPOSITORY = Path(__file__).parents[1]
READER_SQL = REPOSITORY / "recopipeline" / "deploy" / "postgres" / "serving_reader.sql"
DEPLOYMENT = REPOSITORY / "docs" / "deployment.md"


def statements(sql: str) -> list[str]:
    """The statements of a SQL script, without comments and indentation."""
    lines = [line.strip() for line in sql.splitlines() if line.strip() and not line.strip().startswith("--")]
    return [statement.strip() for statement in " ".join(lines).split(";") if statement.strip()]


def documented_grants() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", DEPLOYMENT.read_text(), re.S)
    return [statement for block in blocks for statement in statements(block) if statement.startswith("GRANT")]


def with_variables(statement: str, **values: str) -> str:
    """psql's `:"name"` variables replaced by quoted identifiers, as `psql -v name=value` does."""
    return re.sub(r':"(\w+)"', lambda match: f'"{values[match.group(1)]}"', statement)


def url_of(role: str) -> str:
    return POSTGRES_URL.replace("postgres@", f"{role}@", 1)


@pytest.fixture(name="roles")
def roles_fixture() -> Iterator[tuple[str, str, str]]:
    """A fresh schema owned by a fresh writer role, and a fresh reader role without any privileges yet."""
    suffix = uuid.uuid4().hex[:12]
    schema, writer, reader = f"test_{suffix}", f"test_writer_{suffix}", f"test_reader_{suffix}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{writer}" LOGIN'))
        conn.execute(text(f'CREATE ROLE "{reader}" LOGIN'))
        conn.execute(text(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{writer}"'))
    try:
        yield schema, writer, reader
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            conn.execute(text(f'DROP OWNED BY "{writer}", "{reader}"'))
            conn.execute(text(f'DROP ROLE "{writer}", "{reader}"'))
        admin.dispose()


def test_the_deployment_guide_shows_the_reader_grants_of_the_script():
    assert documented_grants() == statements(READER_SQL.read_text())
    assert len(documented_grants()) == 4


def test_a_reader_with_the_documented_grants_answers_and_records_feedback_but_cannot_publish(roles):
    schema, writer, reader = roles
    owner = ServingDatabase(url_of(writer), schema=schema)  # the writer's first run creates the tables
    publish_generation(owner, "one")
    publish_generation(owner, "two")
    with owner.engine.begin() as conn:
        for statement in documented_grants():
            conn.execute(text(with_variables(statement, schema=schema, reader=reader)))

    db = ServingDatabase(url_of(reader), schema=schema)
    recommender = Recommender(db, cache_ttl=0)

    async def mcp_session() -> tuple[dict, dict, dict]:
        async with Client(build_server(recommender)) as client:  # every answer records its impressions
            own = await client.call_tool("get_product_recommendations", {"customer_id": "C00001", "limit": 3})
            viewing = await client.call_tool(
                "get_product_recommendations", {"customer_id": "newcomer", "product_id": "P0010", "limit": 4}
            )
            first = own.structured_content["recommendations"][0]["product_id"]
            clicked = await client.call_tool("record_feedback", {"customer_id": "C00001", "product_id": first})
            for result in (own, viewing, clicked):
                assert not result.is_error, result.content
            return own.structured_content, viewing.structured_content, clicked.structured_content

    try:
        own, viewing, clicked = anyio.run(mcp_session)
        assert own["version"] == 2 and {r["product_name"] for r in own["recommendations"]} == {"two"}
        assert viewing["cold_start"] is True and len(viewing["recommendations"]) == 4
        assert clicked["event"] == "click" and clicked["variant"] == "control" and clicked["version"] == 2
        assert record_impressions(db, recommender.recommend("C00002")) == 5
        assert record_feedback(db, "C00002", "P0001", "impression")["version"] == 2
        assert recommender.related_products("P0010", "bought_together", limit=2)[0]["rank"] == 1

        with pytest.raises(ProgrammingError, match="permission denied"):
            publish_generation(db, "three")
        with pytest.raises(ProgrammingError, match="permission denied"):
            rollback(db)
        hourly = {"customer_id": "C00001", "variant": "control", "rank": 1, "product_id": "P0001",
                  "product_name": "hourly", "recommendation_type": "ease", "score": 1.0, "evidence": None}
        with pytest.raises(ProgrammingError, match="permission denied"):
            publish_customers(db, [hourly], ["C00001"])
        row = {"version": 2, "product_id": "P0001", "relation": "similar", "rank": 99, "related_product_id": "P0002",
               "related_product_name": "x", "score": 1.0}
        for statement in (
            update(serving_state).values(current_version=1),
            delete(customer_recommendations),
            update(customer_recommendations).values(product_name="changed"),
            insert(product_relations).values(**row),
            delete(publications),
            select(func.count()).select_from(recommendation_feedback),
            update(recommendation_feedback).values(event="click"),
            delete(recommendation_feedback),
            text(f'CREATE TABLE "{schema}".intruder (id integer)'),
        ):
            with pytest.raises(ProgrammingError, match="permission denied"), db.engine.begin() as conn:
                conn.execute(statement)
    finally:
        db.dispose()

    try:
        served = Recommender(owner, cache_ttl=0).recommend("C00001")
        assert served["version"] == 2 and {r["product_name"] for r in served["recommendations"]} == {"two"}
        assert [entry["status"] for entry in history(owner)] == ["live", "retired"]
        with owner.engine.connect() as conn:
            events = conn.execute(
                select(recommendation_feedback.c.event, func.count()).group_by(recommendation_feedback.c.event)
            ).all()
        assert dict(events) == {"impression": 3 + 4 + 5 + 1, "click": 1}
    finally:
        owner.dispose()
