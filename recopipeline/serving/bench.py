"""Serving speed: publish a version of realistic size, then time the read API cached and uncached.

`python -m recopipeline.serving.bench --url URL --customers 200000` publishes customers x 20 rows (scale l:
200,000 customers, 4M rows) plus product-page lists, and reports p50 / p99 latency and throughput of
`get_product_recommendations`. Requests: 90% known customers, 10% unknown (cold start), 20% with a viewed
product. Uncached, every request reads the database; cached, the same requests are answered from a warm cache.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
from collections.abc import Iterator

import duckdb

from recopipeline.lib.variants import Experiment
from recopipeline.serving.database import ServingDatabase
from recopipeline.serving.publish import Expected, publish
from recopipeline.serving.read import Recommender
from recopipeline.serving.schema import COLD_START

TYPES = ("affinity_similar", "collaborative", "complementary", "category_preference", "popular")
EXPERIMENT = Experiment.parse('{"control": {"share": 0.5}, "treatment": {"share": 0.5}}', "bench")
BATCH = 50_000


def customer_id(index: int) -> str:
    return f"C{index:07d}"


def product_id(index: int) -> str:
    return f"P{index:06d}"


def rows(con: duckdb.DuckDBPyConnection, query: str) -> Iterator[list[tuple]]:
    """Stream a query's rows in batches, as the publish asset streams the warehouse's."""
    result = con.execute(query)
    while batch := result.fetchmany(BATCH):
        yield batch


def customer_rows(con: duckdb.DuckDBPyConnection, customers: int, per_customer: int, products: int):
    """customers x per_customer rows in the columns of CUSTOMER_COLUMNS, then a cold-start list per variant."""
    types = "[" + ", ".join(f"'{t}'" for t in TYPES) + "]"
    (_, _, half), _ = EXPERIMENT.buckets()
    return rows(con, f"""
        WITH customers AS (
            SELECT i, 'C' || lpad(i::VARCHAR, 7, '0') AS customer_id FROM range({customers}) AS t(i)
        )
        SELECT customer_id,
               CASE WHEN CAST('0x' || left(md5('{EXPERIMENT.salt}:' || customer_id), 8) AS UBIGINT) < {half}
                    THEN 'control' ELSE 'treatment' END AS variant,
               r AS rank,
               'P' || lpad(((i * 31 + r * 7) % {products})::VARCHAR, 6, '0') AS product_id,
               'Product ' || r AS product_name,
               {types}[1 + (i + r) % {len(TYPES)}] AS recommendation_type,
               round(1 / r, 6) AS score,
               'P' || lpad((i % {products})::VARCHAR, 6, '0') AS evidence
        FROM customers, range(1, {per_customer + 1}) AS s(r)
        UNION ALL
        SELECT '{COLD_START}', v.variant, r, 'P' || lpad(r::VARCHAR, 6, '0'), 'Popular ' || r, 'popular',
               round(1 / r, 6), 'popular:all'
        FROM (VALUES ('control'), ('treatment')) AS v(variant), range(1, {per_customer + 1}) AS s(r)
        ORDER BY 1, 2, 3
    """)


def relation_rows(con: duckdb.DuckDBPyConnection, products: int, per_relation: int):
    return rows(con, f"""
        SELECT 'P' || lpad(p::VARCHAR, 6, '0') AS product_id, relation, r AS rank,
               'P' || lpad(((p + r * k * 13) % {products})::VARCHAR, 6, '0') AS related_product_id,
               'Related ' || r AS related_product_name, round(0.9 / r, 6) AS score
        FROM range({products}) AS t(p), range(1, {per_relation + 1}) AS s(r),
             (VALUES ('similar', 1), ('complementary', 2), ('bought_together', 3)) AS x(relation, k)
        ORDER BY 1, 2, 3
    """)


def requests(customers: int, products: int, count: int, seed: int) -> list[tuple[str, str | None]]:
    rng = random.Random(seed)
    drawn = []
    for _ in range(count):
        known = rng.random() < 0.9
        customer = customer_id(rng.randrange(customers)) if known else f"new-{rng.randrange(10**9)}"
        viewing = product_id(rng.randrange(products)) if rng.random() < 0.2 else None
        drawn.append((customer, viewing))
    return drawn


def timed(reader: Recommender, workload: list[tuple[str, str | None]], threads: int = 1) -> dict:
    """Latency percentiles (ms) and throughput (requests/s) of answering the workload."""
    latencies: list[float] = []
    lock = threading.Lock()

    def worker(part: list[tuple[str, str | None]]) -> None:
        mine = []
        for customer, viewing in part:
            started = time.perf_counter()
            reader.recommend(customer, viewing, 10)
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    parts = [workload[k::threads] for k in range(threads)]
    began = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(part,)) for part in parts]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - began
    cut = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies), "threads": threads,
        "p50_ms": round(cut[49] * 1000, 3), "p99_ms": round(cut[98] * 1000, 3),
        "throughput_rps": round(len(latencies) / wall),
    }


def bench_serving(
    url: str,
    customers: int = 200_000,
    per_customer: int = 20,
    products: int = 20_000,
    per_relation: int = 10,
    count: int = 20_000,
    schema: str | None = None,
    seed: int = 42,
    threads: int = 4,
) -> dict:
    """Publish a version of the given size into `url`, then time reads uncached and cached."""
    db = ServingDatabase(url, schema=schema)
    expected = Expected(customers * per_customer, customers, products * 3 * per_relation, tuple(EXPERIMENT.names))
    con = duckdb.connect()
    try:
        publication = publish(
            db, customer_rows(con, customers, per_customer, products), relation_rows(con, products, per_relation),
            expected, experiment=EXPERIMENT.to_json(), keep_versions=1, max_shrink=1.0,
        )
    finally:
        con.close()
    workload = requests(customers, products, count, seed)
    uncached = Recommender(db, cache_ttl=0)
    cached = Recommender(db, cache_ttl=3600, pointer_ttl=1.0, max_entries=count * 2)
    for customer, viewing in workload:  # warm the cache with exactly the requests measured
        cached.recommend(customer, viewing, 10)
    report = {
        "backend": db.backend,
        "customers": customers,
        "rows": publication.customer_rows,
        "relation_rows": publication.relation_rows,
        "publish_seconds": round(publication.seconds, 1),
        "uncached": timed(uncached, workload),
        "uncached_threads": timed(uncached, workload, threads),
        "cached": timed(cached, workload),
        "cached_threads": timed(cached, workload, threads),
    }
    db.dispose()
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="serving database URL (use an empty database)")
    parser.add_argument("--schema", help="Postgres schema")
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    report = bench_serving(args.url, args.customers, count=args.requests, schema=args.schema, threads=args.threads)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
