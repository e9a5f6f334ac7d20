"""The warehouse on object storage: a real S3-compatible server (moto's) on 127.0.0.1, reached through s3fs.

A nightly rebuild and an hourly refresh written to `s3://…` give the same tables as the local warehouse; every
file is one object; a candidate that failed its audit is never uploaded. The whole runs are slow tests (CI runs
them); the audit test runs by default.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from recopipeline.defs.resources import ServingResource, SourceResource, TuningResource, WarehouseResource
from recopipeline.lib import readonly_sql
from recopipeline.lib.hourly import hour_key
from recopipeline.lib.storage import storage_for
from recopipeline.lib.warehouse import Warehouse
from recopipeline_tests.nightly_base import SOURCE, job_selection

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3_bucket(tmp_path_factory):
    """A bucket on a moto server of this module's own, with the AWS variables pointing at it."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    saved = {name: os.environ.get(name) for name in [*CREDENTIALS, "AWS_ENDPOINT_URL"]}
    os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.1)
        bucket = f"recopipeline-{uuid.uuid4().hex[:8]}"
        storage_for(f"s3://{bucket}").fs.mkdir(bucket)
        yield bucket
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def resources(store: Warehouse, input_cache: str, serving: Path) -> dict:
    return {
        "warehouse": WarehouseResource(root=store.root, memory_limit=store.memory_limit, threads=store.threads),
        "source": SourceResource(source=SOURCE, cache_dir=input_cache),
        "tuning": TuningResource(),
        "serving": ServingResource(url=f"sqlite:///{serving}"),
    }


@pytest.fixture(scope="module")
def remote(definitions, nightly, s3_bucket, tmp_path_factory):
    """The nightly base's rebuild written to the bucket, then its hour refreshed there."""
    store = Warehouse(f"s3://{s3_bucket}/warehouse", memory_limit="1GB", threads=2)
    run = resources(store, nightly.input_cache, tmp_path_factory.mktemp("serving") / "serving.db")
    assets = list(definitions.assets)
    nightly_run = dg.materialize(
        assets, selection=job_selection(definitions, "full_rebuild"), resources=run, tags=nightly.tags
    )
    assert nightly_run.success
    hourly = dg.materialize(
        assets, selection=job_selection(definitions, "hourly_refresh"), resources=run,
        partition_key=hour_key(nightly.hour),
    )
    assert hourly.success
    return store


def ordered(store: Warehouse, asset: str, files: list[str] | None = None) -> pd.DataFrame:
    relation = asset if files is None else "read_parquet([" + ", ".join(f"'{f}'" for f in files) + "])"
    frame = store.read(f"SELECT * FROM {relation}", inputs=[asset] if files is None else [])
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


@pytest.mark.slow  # a whole nightly and hourly run through the S3 server: minutes
def test_the_nightly_rebuild_on_object_storage_gives_the_local_tables(definitions, remote, nightly):
    local = nightly.store
    assert set(local.assets()) <= set(remote.assets())
    refreshed = set(job_selection(definitions, "hourly_refresh"))  # the remote warehouse has had its hour refreshed
    compared = [asset for asset in local.assets() if asset not in refreshed]
    assert "customer_top_recommendations" in compared
    for asset in compared:
        pd.testing.assert_frame_equal(ordered(remote, asset), ordered(local, asset), obj=asset)


@pytest.mark.slow  # a whole nightly and hourly run through the S3 server: minutes
def test_every_file_is_one_object_and_the_catalog_names_every_asset(remote):
    objects = storage_for(remote.root).fs.find(remote.root.removeprefix("s3://"))
    assert objects and all(key.endswith((".parquet", "catalog.duckdb")) for key in objects), objects
    views = set(remote.query_catalog("SELECT view_name FROM duckdb_views() WHERE NOT internal").view_name)
    assert set(remote.assets()) <= views
    shown = remote.query_catalog("SELECT count(*) AS n FROM customer_top_recommendations")
    assert shown.n[0] == len(ordered(remote, "customer_top_recommendations"))


@pytest.mark.slow  # a whole nightly and hourly run through the S3 server: minutes
def test_the_hourly_refresh_on_object_storage_gives_the_local_refresh(definitions, remote, nightly, tmp_path):
    local = nightly.copy_to(tmp_path)
    run = nightly.resources(local)
    hourly = dg.materialize(
        list(definitions.assets), selection=job_selection(definitions, "hourly_refresh"), resources=run,
        partition_key=hour_key(nightly.hour),
    )
    assert hourly.success
    for asset in ("hourly_customer_refresh", "hourly_placement_refresh", "product_trending", "customer_interactions"):
        key = hour_key(nightly.hour)
        if asset.startswith("hourly_"):
            files = [store.partition_path(asset, key) for store in (remote, local)]
            assert storage_for(remote.root).exists(files[0])
            a, b = ordered(remote, asset, [files[0]]), ordered(local, asset, [files[1]])
        else:
            a, b = ordered(remote, asset), ordered(local, asset)
        assert len(a) > 0
        pd.testing.assert_frame_equal(a, b, obj=asset)


def test_a_candidate_that_fails_its_audit_is_never_uploaded(s3_bucket):
    store = Warehouse(f"s3://{s3_bucket}/audit", memory_limit="1GB", threads=2)
    with store.session() as con:
        store.write(con, "table_a", "SELECT 1 AS x")
    candidate = store.stage("table_a")
    with candidate.session() as con:
        candidate.write(con, "table_a", "SELECT 2 AS x")
    assert candidate.read("SELECT x FROM table_a", inputs=["table_a"]).x.tolist() == [2]  # the audit's view
    assert store.read("SELECT x FROM table_a", inputs=["table_a"]).x.tolist() == [1]  # the readers' view
    candidate.discard()
    assert store.read("SELECT x FROM table_a", inputs=["table_a"]).x.tolist() == [1]
    accepted = store.stage("table_a")
    with accepted.session() as con:
        accepted.write(con, "table_a", "SELECT 3 AS x")
    accepted.publish()
    assert store.read("SELECT x FROM table_a", inputs=["table_a"]).x.tolist() == [3]
    assert store.files("table_a") == [f"s3://{s3_bucket}/audit/table_a/data.parquet"]


@pytest.mark.slow  # reads the remote warehouse of the whole runs above
def test_read_only_sql_reads_the_objects_and_nothing_else(remote, s3_bucket):
    counted = readonly_sql.query(remote, "SELECT count(*) AS n FROM customer_top_recommendations")
    assert counted.n[0] == len(ordered(remote, "customer_top_recommendations")) > 0
    with pytest.raises(duckdb.PermissionException):
        readonly_sql.query(remote, f"SELECT * FROM read_parquet('s3://{s3_bucket}/audit/table_a/data.parquet')")
