"""lib/shards.py: the derived stages over N customer buckets, each bucket's phase in a process of its own, give the
tables of one run (`run_stages`).

The data are synthetic xs sources with two changes that a shard-local shortcut would get wrong: orders whose lines
name two customers (so a basket is not a customer's), and merchandising rules per segment. The tuning makes the
thresholds and cuts bite (pairs of support 2, top 5 neighbours, 40 products in EASE) and switches on the
repurchase and trending strategies. Tables are compared sorted, every column exact but floats within 1e-9.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recopipeline.bench.pipeline import ingest_source
from recopipeline.lib import shards
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.sharding import customer_bucket
from recopipeline.lib.sources import resolve_location
from recopipeline.lib.stages import STAGES, Split, customer_keyed, latest_event_time, run_stages
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse
from recopipeline_tests import shard_steps
from recopipeline_tests.conftest import put

TUNING = Tuning(
    min_support=2, cf_top_k=5, ease_max_items=40, complementary_top_k=5,
    weight_repurchase=0.5, exclude_purchased=False, weight_trending=0.5,
)
LEARNED = replace(TUNING, learned_ranking=True, ranking_min_leaf=5, ranking_trees=10, ranking_promotion_margin=0.0)
PER_CUSTOMER = [s.name for s in STAGES if s.split is Split.CUSTOMERS]
ITEM_SIDE = [s.name for s in STAGES if s.split is Split.NONE]


def _store(root: Path) -> Warehouse:
    return Warehouse(str(root), memory_limit="1GB", threads=2)


def _copy(source: Path, target: Path) -> Warehouse:
    shutil.copytree(source, target)
    return _store(target)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse of the sources only."""
    root = tmp_path_factory.mktemp("shard_sources")
    store = _store(root / "warehouse")
    location = resolve_location("synthetic:xs", root / "input")
    for name in SOURCES:
        ingest_source(store, location, name)
    _share_orders(store)
    _add_rules(store)
    return root / "warehouse"


def _share_orders(store: Warehouse) -> None:
    """Of the first 300 orders in time, every second one joins the order before it when the two are of different
    customers: one order, lines of two customers."""
    with store.session(["orders"]) as con:
        store.write(con, "orders", """
            WITH numbered AS (
                SELECT order_id, min(customer_key) AS customer_key,
                       row_number() OVER (ORDER BY min(order_timestamp), order_id) AS n
                FROM orders GROUP BY order_id
            ),
            merged AS (
                SELECT b.order_id AS old_id, a.order_id AS new_id
                FROM numbered AS a JOIN numbered AS b ON b.n = a.n + 1
                WHERE a.n % 2 = 1 AND a.n < 300 AND a.customer_key <> b.customer_key
            )
            SELECT o.* REPLACE (coalesce(m.new_id, o.order_id) AS order_id)
            FROM orders AS o LEFT JOIN merged AS m ON m.old_id = o.order_id
            QUALIFY row_number() OVER (PARTITION BY coalesce(m.new_id, o.order_id), o.product_key
                                       ORDER BY o.customer_key) = 1
        """, order_by="order_id, product_id")
        (shared,) = con.sql(
            f"SELECT count(*) FROM (SELECT order_id FROM {store.scan('orders')} "
            "GROUP BY order_id HAVING count(DISTINCT customer_key) > 1)"
        ).fetchall()[0]
    assert shared > 50


def _add_rules(store: Warehouse) -> None:
    with store.session(["products"]) as con:
        category, brand, product = con.sql(
            "SELECT category, brand, product_id FROM products WHERE is_active AND brand IS NOT NULL "
            "ORDER BY product_id LIMIT 1"
        ).fetchall()[0]
    records = [
        {"rule_id": "boost", "action": "boost", "customer_segment": "returning", "category": category, "value": 1.5},
        {"rule_id": "pin", "action": "pin", "product_ids": product, "value": 3.0, "priority": 1},
        {"rule_id": "exclude", "action": "exclude", "customer_segment": "at_risk", "brand": brand},
    ]
    contract = SOURCES["merchandising_rules"]
    frame = pd.DataFrame([{"placement": "home", **r} for r in records], columns=contract.column_names)
    types = {"VARCHAR": "string", "DOUBLE": "float64", "INTEGER": "Int32", "TIMESTAMP": "datetime64[us]"}
    put(store, "merchandising_rules", frame.astype({c.name: types[c.type] for c in contract.columns}))


@pytest.fixture(scope="module")
def as_of(sources: Path) -> datetime:
    return latest_event_time(_store(sources))


@pytest.fixture(scope="module")
def reference(sources: Path, as_of: datetime, tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    """One run over every customer."""
    store = _copy(sources, tmp_path_factory.mktemp("shard_reference") / "warehouse")
    run_stages(store, TUNING, as_of)
    return store


@pytest.fixture(scope="module")
def four_buckets(
    sources: Path, as_of: datetime, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, shards.ShardedRun]:
    store = _copy(sources, tmp_path_factory.mktemp("shard_four") / "warehouse")
    return Path(store.root), shards.run_sharded(store, TUNING, as_of, buckets=4, processes=2)


def differences(expected: Warehouse, actual: Warehouse, names: list[str]) -> list[str]:
    """The tables that differ, with how: columns and types, rows, or values (floats within 1e-9)."""
    found = []
    for name in names:
        a = expected.read(f"SELECT * FROM {name}", [name])
        b = actual.read(f"SELECT * FROM {name}", [name])
        if list(zip(a.columns, a.dtypes.astype(str))) != list(zip(b.columns, b.dtypes.astype(str))):
            found.append(f"{name}: columns {list(zip(a.columns, a.dtypes))} != {list(zip(b.columns, b.dtypes))}")
            continue
        if len(a) != len(b):
            found.append(f"{name}: {len(a)} rows != {len(b)}")
            continue
        floats = [c for c in a.columns if a[c].dtype.kind == "f"]
        others = [c for c in a.columns if c not in floats]
        a, b = (t.sort_values(others + floats, kind="stable").reset_index(drop=True) for t in (a, b))
        if not a[others].equals(b[others]):
            found.append(f"{name}: values differ")
        elif not all(np.allclose(a[c], b[c], rtol=0, atol=1e-9, equal_nan=True) for c in floats):
            found.append(f"{name}: scores differ by more than 1e-9")
    return found


def assert_same_tables(expected: Warehouse, actual: Warehouse, names: list[str] | None = None) -> None:
    diff = differences(expected, actual, names or [s.name for s in STAGES])
    assert not diff, "; ".join(diff)


def _files(store: Warehouse, asset: str) -> list[str]:
    return sorted(os.path.basename(path) for path in store.files(asset))


def _layout(buckets: int) -> list[str]:
    return ["data.parquet"] if buckets == 1 else [f"bucket-{b:04d}.parquet" for b in range(buckets)]


def test_the_phases_come_from_the_stage_specs() -> None:
    work = shards.plan()
    assert [s.name for s in work.first] == [
        "customer_segments", "customer_behavior_comprehensive", "customer_product_affinity",
    ]
    assert sorted(s.name for s in work.first + work.customers) == sorted(PER_CUSTOMER)
    assert [s.name for s in work.item] == [s.name for s in shards.stage_order() if s.split is Split.NONE]
    # the item-side stages that read customers' rows whole, as one run does: those over orders, the item pairs and
    # the learned ranking's training (see shards.COMBINES; a new one needs partials, or a reason to be here)
    reading_customers = {s.name for s in work.item if any(customer_keyed(i) for i in s.inputs)}
    assert reading_customers - work.combined == {
        "product_repurchase_rates", "products_bought_together", "complementary_products", "ease_item_similarity",
        "collaborative_item_similarity", "ranking_model",
    }
    assert work.combined == set(shards.COMBINES) == {"product_popularity", "product_trending"}


@pytest.mark.parametrize("buckets", [1, 4, 7])
def test_buckets_in_processes_give_the_tables_of_one_run(
    buckets, sources, as_of, reference, four_buckets, tmp_path
) -> None:
    if buckets == 4:
        root, result = four_buckets
        store = _store(root)
    else:
        store = _copy(sources, tmp_path / "warehouse")
        result = shards.run_sharded(store, TUNING, as_of, buckets=buckets, processes=2)
    assert_same_tables(reference, store)
    # every step in a process of its own
    assert len(result.steps) == 2 * buckets + 1 + (buckets > 1)  # and the split of the sources
    assert len({s.pid for s in result.steps}) == len(result.steps) and os.getpid() not in {s.pid for s in result.steps}
    for name in PER_CUSTOMER:
        assert _files(store, name) == _layout(buckets), name
    for name in ITEM_SIDE:
        assert _files(store, name) == ["data.parquet"], name
    if buckets == 1:  # one run's files, nothing else
        assert not any(store.exists(p) for p in shards.PARTIALS) and not store.exists(shards.MANIFEST)
        return
    keys = store.read("SELECT customer_id, customer_key FROM customer_keys", ["customer_keys"])
    bucket_of = {k: customer_bucket(c, buckets) for c, k in zip(keys.customer_id, keys.customer_key)}
    for bucket in range(buckets):
        path = store.partition_path("customer_segments", f"bucket-{bucket:04d}")
        members = store.read(f"SELECT customer_key FROM read_parquet('{path}')").customer_key
        assert len(members) and {bucket_of[k] for k in members} == {bucket}


@pytest.mark.parametrize(("shortcut", "wrong"), [
    (shard_steps.cut_per_bucket_step, "product_popularity"),
    (shard_steps.trending_per_bucket_step, "product_trending"),
], ids=["popularity_cut_per_bucket", "trending_per_bucket"])
def test_a_shard_local_shortcut_fails_the_comparison(shortcut, wrong, sources, as_of, reference, tmp_path) -> None:
    store = _copy(sources, tmp_path / "warehouse")
    shards.run_sharded(store, TUNING, as_of, buckets=4, processes=2, step=shortcut)
    assert any(line.startswith(f"{wrong}:") for line in differences(reference, store, ITEM_SIDE))
    with pytest.raises(AssertionError):
        assert_same_tables(reference, store)


def _state(store: Warehouse) -> dict[str, tuple[int, int]]:
    """Every file of the per-customer tables: (inode, modification time)."""
    found = {}
    for name in PER_CUSTOMER:
        for path in store.files(name):
            info = os.stat(path)
            found[f"{name}/{os.path.basename(path)}"] = (info.st_ino, info.st_mtime_ns)
    return found


def test_rerunning_a_bucket_replaces_exactly_its_files(four_buckets, as_of, reference, tmp_path) -> None:
    store = _copy(four_buckets[0], tmp_path / "warehouse")
    before = _state(store)
    step = shards.Step(shards.CUSTOMERS_PHASE, 2, 4, store, TUNING, as_of)
    shards.in_processes([step], processes=1)
    after = _state(store)
    assert sorted(after) == sorted(before)  # no file added, none lost
    rerun = [s.name for s in shards.plan().customers]
    changed = sorted(path for path in after if after[path] != before[path])
    assert changed == sorted(f"{name}/bucket-0002.parquet" for name in rerun)
    assert_same_tables(reference, store)
    top = store.read("SELECT customer_id, recommendation_rank FROM customer_top_recommendations",
                     ["customer_top_recommendations"])
    assert not top.duplicated().any()


def _visible(store: Warehouse) -> dict[str, list[str]]:
    return {name: _files(store, name) for name in store.assets()}


def test_a_killed_bucket_leaves_the_tables_whole_and_unfinished(four_buckets, as_of, reference, tmp_path) -> None:
    store = _copy(four_buckets[0], tmp_path / "warehouse")
    visible = _visible(store)
    killed = shard_steps.killed_on_second_file_step
    for phase, bucket in ((shards.CUSTOMERS_PHASE, 1), (shards.PARTIALS_PHASE, 3)):
        with pytest.raises(shards.ShardError, match=f"bucket {bucket} of 4.*terminated abruptly"):
            shards.in_processes([shards.Step(phase, bucket, 4, store, TUNING, as_of)], 1, step=killed)
        assert shards.unfinished(store, phase, 4, TUNING, as_of) == [bucket]
    # the readers see the same files, each whole: the old one or the one just put in place; no partial file
    assert {k: v for k, v in _visible(store).items() if k != shards.MANIFEST} == \
        {k: v for k, v in visible.items() if k != shards.MANIFEST}
    assert_same_tables(reference, store)
    # nothing combines the killed bucket's partials, nor runs its customers, until it has run again
    with pytest.raises(shards.ShardError, match="bucket\\(s\\) 3 of 4"):
        shards.item_side(store, TUNING, as_of, 4)
    with pytest.raises(shards.ShardError, match="bucket\\(s\\) 3 of 4"):
        shards.bucket_customers(store, TUNING, as_of, 3, 4)
    steps = [shards.Step(shards.PARTIALS_PHASE, 3, 4, store, TUNING, as_of),
             shards.Step(shards.ITEM_PHASE, None, 4, store, TUNING, as_of)]
    steps += [shards.Step(shards.CUSTOMERS_PHASE, b, 4, store, TUNING, as_of) for b in (1, 3)]
    for step in steps:
        shards.in_processes([step], 1)
    assert shards.unfinished(store, shards.PARTIALS_PHASE, 4, TUNING, as_of) == []
    assert shards.unfinished(store, shards.CUSTOMERS_PHASE, 4, TUNING, as_of) == []
    assert_same_tables(reference, store)


def test_another_as_of_time_or_tuning_is_not_combined_with_the_partials(four_buckets, as_of, tmp_path) -> None:
    store = _copy(four_buckets[0], tmp_path / "warehouse")
    with pytest.raises(shards.ShardError, match="bucket\\(s\\) 0, 1, 2, 3 of 4"):
        shards.item_side(store, replace(TUNING, cf_top_k=6), as_of, 4)
    with pytest.raises(shards.ShardError, match="bucket\\(s\\) 0, 1, 2, 3, 4 of 5"):
        shards.item_side(store, TUNING, as_of, 5)
    with pytest.raises(shards.ShardError, match="bucket\\(s\\) 0 of 4: no finished 'partials' step as of"):
        shards.bucket_customers(store, TUNING, as_of - timedelta(hours=1), 0, 4)


@pytest.mark.slow
def test_learned_ranking_and_a_change_of_bucket_count(sources, as_of, tmp_path) -> None:
    """With the learned ranking on (one model, trained once, read by every bucket), from a warehouse of one run to 7
    buckets and then to 3: each time the tables of one run, and only the files of the current count."""
    expected = _copy(sources, tmp_path / "expected")
    run_stages(expected, LEARNED, as_of)
    assert expected.read("SELECT count(*) AS n FROM learned_recommendations", ["learned_recommendations"]).n[0] > 0
    store = _copy(Path(expected.root), tmp_path / "warehouse")
    for buckets in (7, 3):
        shards.run_sharded(store, LEARNED, as_of, buckets=buckets, processes=2)
        assert_same_tables(expected, store)
        for name in PER_CUSTOMER:
            assert _files(store, name) == _layout(buckets), name
        assert len(_files(store, shards.MANIFEST)) == 2 * buckets + len(shards.plan().item) + 1  # and the split


def test_the_benchmark_times_each_bucket_against_one_run(tmp_path) -> None:
    from recopipeline.bench.shards import summary_table, time_shards

    result = time_shards("xs", tmp_path, buckets=2, processes=2, memory_limit="1GB")
    assert result["rows_match"]
    steps = result["sharded"]["steps"]
    assert [(s["phase"], s["bucket"]) for s in steps] == [
        ("split", None), ("partials", 0), ("partials", 1), ("item-side", None), ("customers", 0), ("customers", 1),
    ]
    assert all(s["seconds"] > 0 and s["peak_rss_bytes"] > 0 for s in steps)
    assert 0 < result["sharded"]["critical_path_seconds"] <= result["sharded"]["work_seconds"]
    assert (result["settings"]["bucket_memory_limit"], result["settings"]["bucket_threads"]) == ("500MB", 1)
    assert result["ratios"]["cpu_work_over_one_run"] > 0
    assert "critical path" in summary_table(result)


def _one_step_at_a_time(store: Warehouse, tuning: Tuning, as_of: datetime, buckets: int) -> None:
    """Every asset as the Dagster layer runs it: each (asset, bucket) a step of its own in `plan()` order, written
    to a candidate, published, then recorded."""
    work = shards.plan()
    bucketed = [(s.name, shards.bucket_stage) for s in work.first] + [(p.name, shards.bucket_partial)
                                                                        for p in work.partials]
    for name, compute in bucketed:
        for bucket in range(buckets):
            shards.forget_bucket(store, name, bucket)
            staged = store.stage(name)
            compute(staged, name, tuning, as_of, bucket, buckets)
            staged.publish()
            shards.record_bucket(store, name, bucket, buckets, tuning, as_of)
    for spec in work.item:
        staged = store.stage(spec.name)
        shards.item_stage(staged, spec.name, tuning, as_of, buckets)
        staged.publish()
    for spec in work.customers:
        for bucket in range(buckets):
            shards.forget_bucket(store, spec.name, bucket)
            staged = store.stage(spec.name)
            shards.bucket_stage(staged, spec.name, tuning, as_of, bucket, buckets)
            staged.publish()
            shards.record_bucket(store, spec.name, bucket, buckets, tuning, as_of)


def test_one_asset_and_bucket_at_a_time_gives_the_tables_of_one_run(reference, as_of, tmp_path) -> None:
    """From a warehouse of one run (its `data.parquet` files), every (asset, bucket) computed as its own step
    through a candidate: the tables of one run, and only the bucket files left."""
    store = _copy(Path(reference.root), tmp_path / "warehouse")
    _one_step_at_a_time(store, TUNING, as_of, 4)
    assert_same_tables(reference, store)
    for name in [*PER_CUSTOMER, *shards.PARTIALS]:
        assert _files(store, name) == _layout(4), name
        assert shards.unfinished_buckets(store, name, 4, TUNING, as_of) == []
    for name in ITEM_SIDE:
        assert _files(store, name) == ["data.parquet"], name
    # a candidate's removal of the other layout waits for its publication; a discarded one removes nothing
    staged = store.stage("customer_segments")
    shards.bucket_stage(staged, "customer_segments", TUNING, as_of, 0, 3)
    assert "bucket-0003.parquet" in _files(store, "customer_segments")
    staged.discard()
    assert _files(store, "customer_segments") == _layout(4)


def test_a_bucket_step_refuses_what_it_cannot_compute(four_buckets, as_of, tmp_path) -> None:
    store = _copy(four_buckets[0], tmp_path / "warehouse")
    with pytest.raises(ValueError, match="not a per-customer stage"):
        shards.bucket_stage(store, "product_popularity", TUNING, as_of, 0, 4)
    with pytest.raises(ValueError, match="buckets > 1"):
        shards.bucket_stage(store, "customer_segments", TUNING, as_of, 0, 1)
    with pytest.raises(ValueError, match="not a partial"):
        shards.bucket_partial(store, "customer_segments", TUNING, as_of, 0, 4)
    os.remove(store.partition_path("customer_behavior_comprehensive", "bucket-0002"))
    with pytest.raises(shards.ShardError, match="'customer_behavior_comprehensive' has no file of bucket 2 of 4"):
        shards.bucket_stage(store, "customer_product_affinity", TUNING, as_of, 2, 4)
    with pytest.raises(shards.ShardError, match="'customer_behavior_comprehensive' has no file of bucket 2 of 4"):
        shards.bucket_partial(store, "shard_popularity_totals", TUNING, as_of, 2, 4)


def test_the_names_and_inputs_of_the_partials() -> None:
    assert shards.partial_names("product_popularity") == ("shard_popularity_totals",)
    assert shards.partial_names("product_similarity") == () and shards.partial_names("customer_segments") == ()
    assert shards.partial_inputs("shard_popularity_totals") == ("customer_behavior_comprehensive",)
    assert shards.partial_inputs("shard_trending_interest") == ("customer_interactions",)


def test_a_bucket_step_gets_its_share_of_the_duckdb_budget(tmp_path) -> None:
    store = Warehouse(str(tmp_path), memory_limit="3GB", threads=2)
    assert shards.bucket_share(store, 1, 2) == store
    eight = shards.bucket_share(store, 8, 2)
    assert (eight.memory_limit, eight.threads, eight.root) == ("375MB", 1, store.root)
    assert shards.bucket_share(replace(store, threads=8), 8, 4).threads == 2  # 4 steps at once
    assert shards.bucket_share(replace(store, threads=8), 2, 4).threads == 4  # 2 at once
    assert shards.bucket_share(store, 100, 1).memory_limit == "256MB"  # never below MIN_SHARE_BYTES
    assert shards.bucket_share(replace(store, memory_limit="200MiB"), 4, 1).memory_limit == "209MB"  # nor above all
    with pytest.raises(ValueError, match="invalid DuckDB memory limit '3 apples'"):
        shards.bucket_share(replace(store, memory_limit="3 apples"), 4, 1)


def test_unfinished_buckets_are_those_not_recorded_for_this_night(four_buckets, as_of, tmp_path) -> None:
    store = _copy(four_buckets[0], tmp_path / "warehouse")
    name = "customer_segments"
    # the batch run's phase entries count for its files
    assert shards.unfinished_buckets(store, name, 4, TUNING, as_of) == []
    for bucket in range(4):
        shards.forget_bucket(store, name, bucket)
    assert shards.unfinished_buckets(store, name, 4, TUNING, as_of) == [0, 1, 2, 3]
    assert shards.unfinished(store, shards.PARTIALS_PHASE, 4, TUNING, as_of) == [0, 1, 2, 3]
    shards.record_bucket(store, name, 0, 4, TUNING, as_of)
    shards.record_bucket(store, name, 1, 4, TUNING, as_of - timedelta(days=1))
    shards.record_bucket(store, name, 2, 4, replace(TUNING, cf_top_k=6), as_of)
    shards.record_bucket(store, name, 3, 4, TUNING, as_of)
    assert shards.unfinished_buckets(store, name, 4, TUNING, as_of) == [1, 2]
    assert shards.unfinished_buckets(store, name, 5, TUNING, as_of) == [0, 1, 2, 3, 4]
    # forgetting a bucket of a table the batch phase wrote forgets that phase's bucket: an item-side table refuses
    # its partials until each bucket is finished again
    with pytest.raises(shards.ShardError, match="^'shard_popularity_totals' bucket\\(s\\) 0, 1, 2, 3 of 4: "):
        shards.item_stage(store, "product_popularity", TUNING, as_of, 4)
    with pytest.raises(shards.ShardError, match="^'customer_product_affinity' bucket\\(s\\) 0, 1, 2, 3 of 4: "):
        shards.item_stage(store, "collaborative_item_similarity", TUNING, as_of, 4)
    for bucket in range(4):
        shards.record_bucket(store, "shard_popularity_totals", bucket, 4, TUNING, as_of)
    shards.forget_bucket(store, "shard_popularity_totals", 3)
    with pytest.raises(shards.ShardError, match="^'shard_popularity_totals' bucket\\(s\\) 3 of 4: not finished"):
        shards.item_stage(store, "product_popularity", TUNING, as_of, 4)
    shards.record_bucket(store, "shard_popularity_totals", 3, 4, TUNING, as_of)
    assert shards.item_stage(store, "product_popularity", TUNING, as_of, 4) > 0
    with pytest.raises(shards.ShardError, match="no published file of bucket 4 of 5"):
        shards.record_bucket(store, name, 4, 5, TUNING, as_of)
    # recorded entries are not the batch phase's: finishing a phase of 4 buckets keeps them
    shards._retire_manifests(store, shards.PARTIALS_PHASE, 4)
    assert shards.unfinished_buckets(store, name, 4, TUNING, as_of) == [1, 2]


def test_a_split_of_other_sources_is_not_read(four_buckets, tmp_path) -> None:
    """The bucket files of the split are read only while they are of the sources as they are, of this bucket count
    and with the columns wanted; otherwise a step cuts its rows out of the sources."""
    store = _copy(four_buckets[0], tmp_path / "warehouse")
    files = [store.partition_path("bucket_orders", f"bucket-{b:04d}") for b in range(4)]
    assert _files(store, "bucket_orders") == _layout(4)
    assert store.read(f"SELECT count(*) AS n FROM read_parquet({files})").n[0] == store.read("SELECT count(*) AS n FROM orders", ["orders"]).n[0]
    wanted = {"orders": ("order_id", "customer_key")}
    assert shards._split_covers(store, 4, wanted)
    assert not shards._split_covers(store, 5, wanted)
    assert shards._split_covers(store, 4, {"customer_interactions": ("customer_key", "interaction_type")})
    # a column the split does not hold (no step names the events' session)
    assert not shards._split_covers(store, 4, {"customer_interactions": ("customer_key", "session_id")})
    with store.session(["orders"]) as con:  # a new ingest of the orders
        store.write(con, "orders", "SELECT * FROM orders WHERE order_id <> (SELECT min(order_id) FROM orders)")
    assert not shards._split_covers(store, 4, wanted)
