"""Customer buckets through Dagster: `recopipeline materialize --shards 3` in real processes, a run per bucket.

The nightly rebuild over three buckets gives the tables of the one-bucket nightly base; a bucket's run again
replaces its files; a night whose buckets did not all run is not published, and the served version stays.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from recopipeline.lib.hourly import HOUR, hour_key
from recopipeline.lib.stages import STAGES
from recopipeline.lib.warehouse import Warehouse
from recopipeline.serving import ServingDatabase

pytestmark = pytest.mark.slow  # several Dagster runs in processes of their own: minutes

BUCKETS = 3
COMMAND = str(Path(sys.executable).parent / "recopipeline")


def recopipeline(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, *args], capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def sharded(nightly, tmp_path_factory):
    """A home whose nightly rebuild ran over three buckets, from the nightly base's input and as of its hour."""
    root = tmp_path_factory.mktemp("shards")
    (root / "home").mkdir()
    (root / "home" / "input").symlink_to(nightly.input_cache)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RECOPIPELINE_", "DAGSTER_"))}
    env |= {"RECOPIPELINE_HOME": str(root / "home"), "RECOPIPELINE_SOURCE": "synthetic:xs",
            "DAGSTER_HOME": str(root / "dagster_home")}
    done = recopipeline(env, "materialize", "--shards", str(BUCKETS), "--as-of", nightly.hour.isoformat(),
                        "--hour", f"{hour_key(nightly.first)}...{hour_key(nightly.last)}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{BUCKETS} customer buckets, a process per bucket run" in done.stdout.splitlines()[0]
    return env, Warehouse(str(root / "home" / "warehouse"), memory_limit="1GB", threads=2), root


def table(store: Warehouse, asset: str) -> pd.DataFrame:
    frame = store.read(f"SELECT * FROM {asset}", inputs=[asset])
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def served(database_file: Path) -> pd.DataFrame:
    """The live version's customer rows (without the version and when it was made)."""
    database = ServingDatabase(f"sqlite:///{database_file}")
    try:
        with database.engine.connect() as conn:
            return pd.read_sql(
                "SELECT r.* FROM customer_recommendations AS r JOIN serving_state AS s ON r.version = s.current_version "
                "ORDER BY r.customer_id, r.variant, r.rank", conn,
            ).drop(columns=["version", "generated_at"])
    finally:
        database.dispose()


def test_three_buckets_give_the_tables_of_one_run(sharded, nightly):
    _, store, root = sharded
    for spec in STAGES:
        pd.testing.assert_frame_equal(table(store, spec.name), table(nightly.store, spec.name), obj=spec.name,
                                      check_exact=False, rtol=0, atol=1e-9)
    per_customer = store.files("customer_top_recommendations")
    assert [os.path.basename(path) for path in per_customer] == [f"bucket-{b:04d}.parquet" for b in range(BUCKETS)]
    pd.testing.assert_frame_equal(served(root / "home" / "serving.db"), served(nightly.root / "warehouse-serving.db"))
    with dg.DagsterInstance.from_config(str(root / "dagster_home")) as instance:
        runs = instance.get_runs()
    per_job = pd.Series([run.job_name for run in runs]).value_counts().to_dict()
    assert per_job == {"full_rebuild": 1, "shard_partials": BUCKETS, "shard_item_side": 1,
                       "shard_customers": BUCKETS, "shard_publish": 1}
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)


def test_a_bucket_run_again_replaces_its_files(sharded, nightly):
    env, store, _ = sharded
    before = {path: os.path.getmtime(path) for path in store.files("customer_top_recommendations")}
    again = recopipeline(env, "materialize", "--shards", str(BUCKETS), "--job", "shard_customers", "--bucket", "1",
                         "--as-of", nightly.hour.isoformat())
    assert again.returncode == 0, again.stdout + again.stderr
    after = {path: os.path.getmtime(path) for path in store.files("customer_top_recommendations")}
    assert after.keys() == before.keys()
    assert [path for path in after if after[path] != before[path]] == [store.partition_path(
        "customer_top_recommendations", "bucket-0001")]
    pd.testing.assert_frame_equal(table(store, "customer_top_recommendations"),
                                  table(nightly.store, "customer_top_recommendations"))


def test_a_night_with_a_bucket_missing_is_not_published(sharded, nightly):
    env, store, root = sharded
    live = served(root / "home" / "serving.db")
    later = (nightly.hour + HOUR).isoformat()
    for args in (["--job", "shard_partials"], ["--job", "shard_item_side"],
                 ["--job", "shard_customers", "--bucket", "0"]):  # buckets 1 and 2 do not get to run
        done = recopipeline(env, "materialize", "--shards", str(BUCKETS), *args, "--as-of", later)
        assert done.returncode == 0, done.stdout + done.stderr
    refused = recopipeline(env, "materialize", "--shards", str(BUCKETS), "--job", "shard_publish", "--as-of", later)
    assert refused.returncode == 2
    (line,) = refused.stderr.splitlines()  # the one error line, nothing else
    assert line.startswith("recopipeline: error:") and "customer_top_recommendations (bucket 1, 2)" in line and later in line, line
    pd.testing.assert_frame_equal(served(root / "home" / "serving.db"), live)  # the served version is still the last whole night's
