"""Shared by the serving, publish and MCP tests: a real serving database per test and generated versions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from recopipeline.lib.variants import Experiment
from recopipeline.serving import COLD_START, Expected, ServingDatabase, publish
from recopipeline.serving.schema import TRENDING

POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
ONE_VARIANT = Experiment.parse('{"control": {"share": 1.0}}', "test-salt")


def sqlite_database(folder: Path) -> ServingDatabase:
    return ServingDatabase(f"sqlite:///{folder / 'serving.db'}")


def fresh_schema() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


def drop_schema(schema: str) -> None:
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(name="database", params=["sqlite", "postgres"])
def database_fixture(request, tmp_path) -> Iterator[ServingDatabase]:
    """A real, empty serving database: a SQLite file, or a schema of its own in the local Postgres."""
    if request.param == "sqlite":
        db = sqlite_database(tmp_path)
        yield db
        db.dispose()
        return
    schema = fresh_schema()
    db = ServingDatabase(POSTGRES_URL, schema=schema)
    try:
        yield db
    finally:
        db.dispose()
        drop_schema(schema)


def customer_ids(count: int) -> list[str]:
    return [f"C{i:05d}" for i in range(count)]


def generation(
    tag: str, customers: int = 50, per_customer: int = 5, experiment: Experiment = ONE_VARIANT
) -> tuple[list[list[dict]], list[list[dict]], Expected]:
    """A complete version whose every product name is `tag`, so a reader can tell versions apart."""
    rows = [
        {
            "customer_id": customer, "variant": experiment.assign(customer), "rank": rank,
            "product_id": f"P{(index * 7 + rank) % 500:04d}", "product_name": tag,
            "recommendation_type": ("collaborative", "affinity_similar", "complementary")[rank % 3],
            "score": round(1 / rank, 6), "evidence": f"seed:{tag}",
        }
        for index, customer in enumerate(customer_ids(customers))
        for rank in range(1, per_customer + 1)
    ]
    cold = [
        {
            "customer_id": COLD_START, "variant": variant, "rank": rank, "product_id": f"P9{rank:03d}",
            "product_name": tag, "recommendation_type": "popular", "score": round(1 / rank, 6),
            "evidence": "popular:all",
        }
        for variant in experiment.names
        for rank in range(1, 6)
    ]
    trending = [
        {
            "customer_id": TRENDING, "variant": variant, "rank": rank, "product_id": f"P8{rank:03d}",
            "product_name": tag, "recommendation_type": "trending", "score": round(1 / rank, 6),
            "evidence": f"trending:{4 - rank}.0x",
        }
        for variant in experiment.names
        for rank in range(1, 4)
    ]
    relations = [
        {
            "product_id": f"P{p:04d}", "relation": relation, "rank": rank,
            "related_product_id": f"P{(p + rank * (3 if relation == 'similar' else 11)) % 500:04d}",
            "related_product_name": tag, "score": round(0.9 / rank, 6),
        }
        for p in range(0, 500, 10)
        for relation in ("similar", "complementary", "bought_together")
        for rank in range(1, 4)
    ]
    expected = Expected(len(rows), customers, len(relations), tuple(experiment.names))
    batch = 1000
    listed = rows + cold + trending
    customer_batches = [listed[i : i + batch] for i in range(0, len(listed), batch)]
    return customer_batches, [relations], expected


def publish_generation(db: ServingDatabase, tag: str, **options):
    customer_batches, relation_batches, expected = generation(
        tag, **{k: v for k, v in options.items() if k in ("customers", "per_customer", "experiment")}
    )
    experiment = options.get("experiment", ONE_VARIANT)
    return publish(
        db, customer_batches, relation_batches, expected, experiment=experiment.to_json(),
        **{k: v for k, v in options.items() if k in ("keep_versions", "max_shrink", "run_id")},
    )
