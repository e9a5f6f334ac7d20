"""The `recopipeline` command: real subprocesses, one-line errors."""

import os
import subprocess
import sys

import pytest


def cli(*args, env=None, home=None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    if home:
        environment["RECOPIPELINE_HOME"] = str(home)
        environment.pop("RECOPIPELINE_WAREHOUSE", None)
    return subprocess.run([sys.executable, "-m", "recopipeline.cli", *args], capture_output=True, text=True,
                          env=environment, timeout=300)


def test_generate_writes_the_five_sources_with_progress(tmp_path):
    result = cli("generate", "--scale", "xs", "--out", str(tmp_path / "xs"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "xs").glob("*.parquet")) == [
        "cart_activity.parquet", "customer_interactions.parquet", "customers.parquet", "orders.parquet",
        "products.parquet"]
    assert "customer_interactions" in result.stdout and "generated scale xs" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["generate", "--scale", "huge", "--out", "x"], "unknown scale 'huge'"),
    (["recommend", "C1"], "upstream asset 'customer_top_recommendations' has not been materialized"),
    (["materialize", "--as-of", "yesterday"], "is not an ISO 8601 timestamp"),
])
def test_errors_are_one_clear_line(tmp_path, args, message):
    result = cli(*args, home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("recopipeline: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_sql_and_recommend_read_the_warehouse(tmp_path):
    from recopipeline.lib.warehouse import Warehouse
    from recopipeline_tests.conftest import put, rows

    store = Warehouse(str(tmp_path / "warehouse"))
    put(store, "customer_top_recommendations", __import__("pandas").DataFrame({
        "customer_id": ["C1", "C1"], "recommendation_rank": [1, 2], "product_id": ["P2", "P3"],
        "product_name": ["Two", "Three"], "category": ["A", "A"], "price": [1.0, 2.0],
        "recommendation_type": ["collaborative", "popular"], "recommendation_score": [0.5, 0.1],
        "evidence": ["P1", "popular:new"]}))
    put(store, "customers", rows("customers", [{"customer_id": "C1"}]))
    store.refresh_catalog()
    shown = cli("recommend", "C1", home=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.index("P2") < shown.stdout.index("P3") and "collaborative" in shown.stdout
    missing = cli("recommend", "C404", home=tmp_path)
    assert missing.returncode == 2 and "no recommendations for customer 'C404'" in missing.stderr
    counted = cli("sql", "SELECT count(*) AS n FROM customer_top_recommendations", home=tmp_path)
    assert counted.returncode == 0 and counted.stdout.split() == ["n", "2"]
