"""Customer shards: the nightly derived stages over N buckets of customers, with the tables of one run.

**Buckets.** A customer's bucket is `lib/sharding.py`'s stable hash: the first 32 bits of md5(customer_id) modulo
the bucket count, computed in DuckDB over the key dictionary `customer_keys` (every id ever accepted, so every row
of a customer source is in exactly one bucket). It is the id's, not the integer key's: the id is what every
per-customer output and the serving database carry, so a bucket can be told from any of them, and it does not
depend on the order in which a warehouse numbered its customers. With `buckets=1` nothing is split: every
phase runs the stages exactly as one run does (`run_stage`, one `data.parquet` per table).

**Phases**, derived from the stage specs (`plan()`):
1. per bucket (`bucket_partials`): the per-customer stages that item-side stages read (upstream of a
   `Split.NONE` stage: customer_segments, customer_behavior_comprehensive, customer_product_affinity) over the
   bucket's customers, and the bucket's exact partial aggregates (`PARTIALS`) of the item-side stages in
   `COMBINES`: the sums over customers that product_popularity and product_trending rank, computed by the stage's
   own prepared SQL (`sql/popularity_totals.sql`, `sql/trending_interest.sql`) over the bucket's rows. No pruning,
   no threshold, no top-K: those apply to sums over every bucket only.
2. once (`item_side`): every item-side stage, in run order: the ones in `COMBINES` by their own SQL over the
   partials of all buckets as their prepared tables (the SQL sums them again, exact DECIMAL and integer sums, so
   the same bits as one run), then ranked and cut as one run; the others by `run_stage` over their whole inputs,
   reading a per-customer table as all buckets' files.
3. per bucket (`bucket_customers`): the remaining per-customer stages (category preferences, the blend, the
   candidate features, the learned ranks, the top N, the placement lists) over the bucket's customers, reading
   the item-side tables whole and the bucket's own phase-1 files.

**Hidden global dependencies**, and how each is kept:
- product_popularity ranks products by sums over every customer: the buckets' totals summed, then ranked and cut.
- product_trending sums every customer's interactions of the last 8 days: summed, then scored and ranked.
- Every other item-side stage depends on every customer or order in ways a bucket cannot see (a max over all
  products, thresholds and top-K over sums, EASE's most-bought products, the learned ranking's training set), so it
  runs once in phase 2 over its whole inputs, exactly as one run: product_repurchase_rates,
  products_bought_together, complementary_products, collaborative_item_similarity, ease_item_similarity,
  product_similarity, ranking_model. The per-customer tables they read are every bucket's files of phase 1.
- The per-customer stages read no other customer's rows: segment thresholds are tuning values, not quantiles
  over customers; the A/B variant hangs on the customer's id; the blend numbers products only to keep key order
  and reads product-side tables whole; candidate features take product statistics from the item-side tables;
  merchandising rules match products and segments.

**Files.** A per-customer table is one file per bucket, `<root>/<asset>/bucket-0003.parquet`
(`Warehouse.partition_path(asset, "bucket-0003")`); the warehouse reads every file of an asset's folder as one
table (`Warehouse.scan`, the catalog views), so readers see one table. A partial is the asset `shard_<name>`, one
file per bucket. The item-side tables stay one `data.parquet`. Each file is written to a temporary file and put
in place whole (`Warehouse.write`), so a rerun of a bucket replaces exactly its files, and a killed one leaves
every file as it was or whole and new, never a part. `shard_manifest` holds one small file per finished step
(`partials-bucket-0003`, `item-product_popularity` per item-side table, `customers-bucket-0003`): as of when, with
which tuning, for how many buckets. A step removes its own entry first and writes it last, so an interrupted step
leaves none; an item-side table is computed only when every bucket's partials are finished with its as-of time,
tuning and bucket count, and phase 3 of a bucket only when its partials and every item-side table are. The last
bucket to finish a phase removes the files of another bucket count (a `data.parquet` of one run, buckets beyond
the count); until then a change of the count shows both layouts.

**Processes.** `run_sharded` runs each bucket's phase in a process of its own (a forkserver that has imported
this module, one task per process, at most `processes` at a time; each opens its own DuckDB), then phase 2 in
one more; `python -m recopipeline.lib.shards` runs one step or all.

**One (asset, bucket) at a time.** The Dagster layer makes each (asset, bucket) a step that writes, audits and
publishes: `bucket_stage` (a per-customer stage) and `bucket_partial` (a partial) compute one bucket's file,
`item_stage` one item-side table, each through a store that stages the asset (`Warehouse.stage`). Such a caller
records each published bucket file (`record_bucket`: entry `<asset>-bucket-0003`), removes the entry before it
rewrites the file (`forget_bucket`) and asks which buckets are not finished (`unfinished_buckets`); the entries of
the batch steps count for their files too, and `forget_bucket` removes the batch step's entry of that bucket. A
bucket step removes the asset's files of another layout through its store, so with a candidate when it is
published: no step of a split run reads them (each reads its own bucket's files), only readers of whole tables do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import glob
import re
import resource
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from functools import cache

import duckdb
import pyarrow as pa

from recopipeline.lib.contract import SOURCES
from recopipeline.lib.keys import key_columns
from recopipeline.lib.processes import TasksFailed, each_in_a_process
from recopipeline.lib.sharding import customer_bucket_sql
from recopipeline.lib.stages import (
    CUSTOMER_SOURCES,
    Split,
    Stage,
    customer_keyed,
    latest_event_time,
    per_customer_stages,
    run_stage,
    stage,
    stage_order,
    upstream_stages,
    variables,
    write_stage,
)
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import PARQUET, Warehouse, load_sql, run

MODULE = "recopipeline.lib.shards"
MANIFEST = "shard_manifest"
SPLIT_PHASE, PARTIALS_PHASE, ITEM_PHASE, CUSTOMERS_PHASE = "split", "partials", "item-side", "customers"
SPLIT_PREFIX = "bucket_"  # bucket_<source>: a customer source cut into its buckets (split_sources)
_BUCKET_FILE = re.compile(r"^bucket-(\d{4})\.parquet$")
_MANIFEST_FILE = re.compile(r"^(partials|customers)-bucket-(\d{4})\.parquet$")
_ASSET_ENTRY_FILE = re.compile(r"^([a-z_][a-z0-9_]*)-bucket-(\d{4})\.parquet$")
_TABLE_READ = re.compile(r"\b(?:FROM|JOIN)\s+([a-z_][a-z0-9_]*)", re.IGNORECASE)


class ShardError(RuntimeError):
    """A phase cannot run yet (a bucket has not finished the one before), or a bucket's process failed."""


@dataclass(frozen=True)
class Partial:
    """A bucket's part of the sums an item-side stage ranks: the stage's prepared `sql/<sql>.sql` over the bucket's
    rows, written per bucket as asset `name`."""

    name: str
    sql: str  # the prepared SQL of the combined stage whose part this is
    reads: tuple[str, ...]  # the customer-keyed tables of the bucket it reads
    order_by: str


PARTIALS: dict[str, Partial] = {p.name: p for p in (
    Partial("shard_popularity_totals", "popularity_totals", ("customer_behavior_comprehensive",), "segment, product_key"),
    Partial("shard_trending_interest", "trending_interest", ("customer_interactions",), "product_key"),
)}


def partial_sql(name: str) -> str:
    """The SQL of a partial over the bucket's tables."""
    return load_sql(PARTIALS[name].sql)


@dataclass(frozen=True)
class Combine:
    """An item-side stage computed from the buckets' partials: its SQL over the partials of all buckets read
    together as its prepared tables (each the stage's sums, which the stage sums again before it ranks)."""

    stage: str
    partials: tuple[str, ...]


# The item-side stages computed from the buckets' partials: sums per product over the bucket's customers, small
# beside the rows they sum, made in the bucket's session where those rows already are. Every other item-side stage
# runs over its whole inputs once, as one run does, reading a per-customer table as all buckets' files: the stages
# over orders (repurchase rates, baskets, complements, EASE), since orders are the smallest customer source and
# cutting a bucket of orders out of them costs more than those stages; and the item pairs of
# collaborative_item_similarity, since a bucket's pairs are as many as its rows and summing them costs more than
# the stage's own compiled loop.
COMBINES: dict[str, Combine] = {c.stage: c for c in (
    Combine("product_popularity", ("shard_popularity_totals",)),
    Combine("product_trending", ("shard_trending_interest",)),
)}


# ---- the plan ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What each phase computes, in run order."""

    first: tuple[Stage, ...]  # phase 1: the per-customer stages item-side stages read
    partials: tuple[Partial, ...]  # phase 1: the partial aggregates of the combined stages
    item: tuple[Stage, ...]  # phase 2: every item-side stage
    combined: frozenset[str]  # of those, the ones computed from partials (the others run over whole inputs)
    customers: tuple[Stage, ...]  # phase 3: the remaining per-customer stages

    @property
    def first_assets(self) -> list[str]:
        return [s.name for s in self.first] + [p.name for p in self.partials]


def plan() -> Plan:
    """The phases from the stage specs: item-side = `Split.NONE`; phase 1 = the per-customer stages upstream of
    one; phase 3 = the other per-customer stages."""
    item = [s for s in stage_order() if s.split is Split.NONE]
    upstream = {u.name for s in item for u in upstream_stages(s.name)}
    first = [s for s in per_customer_stages() if s.name in upstream]
    for spec in first:
        behind = [u.name for u in upstream_stages(spec.name) if u.split is Split.NONE]
        if behind:
            raise ValueError(f"'{spec.name}' is read by item-side stages and reads {behind}: it cannot be split")
    combined = [s for s in item if s.name in COMBINES]
    for spec in combined:
        sums = {PARTIALS[name].sql for name in COMBINES[spec.name].partials}
        if sums != set(spec.prepared):
            raise ValueError(f"the partials of '{spec.name}' are of {sorted(sums)}, not of its prepared {spec.prepared}")
        for name in COMBINES[spec.name].partials:
            foreign = set(PARTIALS[name].reads) - {i for i in spec.inputs if customer_keyed(i)}
            if foreign:
                raise ValueError(f"partial '{name}' of '{spec.name}' reads {sorted(foreign)}, not inputs of the stage")
    names = dict.fromkeys(name for s in combined for name in COMBINES[s.name].partials)
    return Plan(
        first=tuple(first),
        partials=tuple(PARTIALS[name] for name in names),
        item=tuple(item),
        combined=frozenset(s.name for s in combined),
        customers=tuple(s for s in per_customer_stages() if s.name not in upstream),
    )


def bucket_key(bucket: int, buckets: int) -> str | None:
    """The partition a bucket's files are written as: None (`data.parquet`) with one bucket, else `bucket-0003`."""
    _check_bucket(bucket, buckets)
    return None if buckets == 1 else f"bucket-{bucket:04d}"


def _check_bucket(bucket: int | None, buckets: int) -> None:
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    if bucket is not None and not 0 <= bucket < buckets:
        raise ValueError(f"bucket {bucket} is not one of 0..{buckets - 1}")


def _check_split(bucket: int, buckets: int) -> None:
    _check_bucket(bucket, buckets)
    if buckets < 2:
        raise ValueError("one (asset, bucket) at a time needs buckets > 1; with one bucket run the stage whole")


def partial_names(stage_name: str) -> tuple[str, ...]:
    """The partials an item-side stage is combined from (`COMBINES`); () for any other stage."""
    combine = COMBINES.get(stage_name)
    return combine.partials if combine else ()


def partial_inputs(name: str) -> tuple[str, ...]:
    """The tables a partial reads: its customer-keyed `reads` and the other tables its SQL reads."""
    known = set(CUSTOMER_SOURCES) | {s.name for s in stage_order()} | {"customer_keys", "product_keys", "products"}
    read = [t for t in _TABLE_READ.findall(partial_sql(name)) if t in known]
    return tuple(dict.fromkeys([*PARTIALS[name].reads, *read]))


def bucket_stage(store: Warehouse, name: str, tuning: Tuning, as_of: datetime, bucket: int, buckets: int) -> int:
    """One per-customer stage for one bucket: the bucket's file of `name` (`bucket-0003`); returns its rows.

    The stage's other inputs are read whole, the customer sources as the bucket's rows, and every per-customer
    stage it reads as that stage's file of the same bucket (ShardError if there is none). `store` may stage `name`
    (`Warehouse.stage`): the file is then the candidate's, published with it. The files of `name` of another
    layout (one run's `data.parquet`, buckets beyond the count) are removed through the same store, so with a
    candidate at its publication. No step of a split run reads them: each reads its own bucket's files."""
    spec = stage(name)
    if spec.split is not Split.CUSTOMERS:
        raise ValueError(f"'{name}' is not a per-customer stage")
    _check_split(bucket, buckets)
    retire_other_layouts(store, [name], buckets)
    with _bucket_session(store, [name], tuning, as_of, bucket, buckets) as con:
        return _write_bucket(store, con, name, tuning, bucket, buckets)


def bucket_partial(store: Warehouse, name: str, tuning: Tuning, as_of: datetime, bucket: int, buckets: int) -> int:
    """One partial (`PARTIALS`) for one bucket, as `bucket_stage` computes a stage: over the bucket's rows of the
    customer sources and the bucket's files of the per-customer stages it reads; returns its rows."""
    if name not in PARTIALS:
        raise ValueError(f"'{name}' is not a partial (one of {', '.join(PARTIALS)})")
    _check_split(bucket, buckets)
    retire_other_layouts(store, [name], buckets)
    with _bucket_session(store, [name], tuning, as_of, bucket, buckets) as con:
        return _write_bucket(store, con, name, tuning, bucket, buckets)


@contextmanager
def _bucket_session(
    store: Warehouse, names: Sequence[str], tuning: Tuning, as_of: datetime, bucket: int, buckets: int
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A session for computing the bucket's files of `names` (per-customer stages and partials, in run order):
    their whole inputs as views, the bucket's rows of the customer sources they read as temp tables (once for
    all of them)."""
    reads = {table for name in names for table in _reads(name)}
    with store.session(_broadcast(reads), variables=variables(tuning, as_of)) as con:
        _restrict_for(store, con, bucket, buckets, names)
        yield con


def _reads(name: str) -> tuple[str, ...]:
    """The tables a per-customer stage or a partial reads."""
    return PARTIALS[name].reads if name in PARTIALS else stage(name).inputs


def _write_bucket(
    store: Warehouse, con: duckdb.DuckDBPyConnection, name: str, tuning: Tuning, bucket: int, buckets: int
) -> int:
    """Compute the bucket's rows of `name` in a bucket session and write them as its file, as `write_stage`
    writes a whole table: in the stage's row order, streamed as computed when the compute gives them in it."""
    _bucket_views(store, con, _reads(name), bucket, buckets)
    key = bucket_key(bucket, buckets)
    if name in PARTIALS:
        return store.write(con, name, partial_sql(name), partition=key, order_by=PARTIALS[name].order_by)
    return write_stage(store, con, stage(name), tuning, partition=key)


def _bucket_views(
    store: Warehouse, con: duckdb.DuckDBPyConnection, inputs: Iterable[str], bucket: int, buckets: int
) -> None:
    """Each per-customer stage among `inputs` as a view over its file of the bucket."""
    key = bucket_key(bucket, buckets)
    for name in inputs:
        if not customer_keyed(name) or name in CUSTOMER_SOURCES:
            continue
        path = store.partition_path(name, key)
        if not store.storage.exists(path):
            raise ShardError(f"'{name}' has no file of bucket {bucket} of {buckets} ({path}): compute it first")
        run(con, f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM read_parquet({_quote(path)})")


def _broadcast(names: Iterable[str]) -> list[str]:
    """The tables read whole in every bucket (the catalogue, the dictionaries, the item-side tables); the customer
    dictionary whenever a customer source is read (it tells the bucket's customers)."""
    names = set(names)
    keys = {"customer_keys"} if names & set(CUSTOMER_SOURCES) else set()
    return sorted({name for name in names if not customer_keyed(name)} | keys)


def _restrict_for(
    store: Warehouse, con: duckdb.DuckDBPyConnection, bucket: int, buckets: int, names: Iterable[str]
) -> None:
    """The bucket's rows of the customer sources that `names` (per-customer stages, partials) read, with the
    columns their computations name (`source_columns`): each source is scanned once per session, and a column
    nobody reads is never decoded."""
    names = tuple(names)
    sources = [source for source in CUSTOMER_SOURCES if any(source in _reads(name) for name in names)]
    wanted = {source: source_columns(source, names) for source in sources}
    if wanted and _split_covers(store, buckets, wanted):
        for source in sources:
            path = _quote(store.partition_path(split_asset(source), bucket_key(bucket, buckets)))
            run(con, f"CREATE OR REPLACE TEMP VIEW {source} AS SELECT * FROM read_parquet({path})")
        return
    restrict_sources(store, con, bucket, buckets, wanted)


def restrict_sources(
    store: Warehouse, con: duckdb.DuckDBPyConnection, bucket: int, buckets: int,
    sources: Iterable[str] | Mapping[str, Sequence[str]],
) -> None:
    """In a session that has `customer_keys`: the bucket's rows of the customer sources `sources` as temp tables of
    their names, each with every column, or the columns a mapping gives it."""
    columns = sources if isinstance(sources, Mapping) else {source: ("*",) for source in sources}
    if not columns:
        return
    run(
        con,
        "CREATE OR REPLACE TEMP TABLE bucket_customer_keys AS SELECT customer_key FROM customer_keys "
        f"WHERE {customer_bucket_sql('customer_id', buckets)} = {int(bucket)}",
    )
    for source, names in columns.items():
        if source not in CUSTOMER_SOURCES:
            raise ValueError(f"'{source}' is not a customer source")
        run(
            con,
            f"CREATE OR REPLACE TEMP TABLE {source} AS SELECT {', '.join(names)} FROM {store.scan(source)} "
            "WHERE customer_key IN (SELECT customer_key FROM bucket_customer_keys)",
        )


@cache
def source_columns(source: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """The columns of a customer source's warehouse table that the computations of those of `names` (per-customer
    stages, partials) that read it name in their SQL or Python (`Stage.source_files`, the partials' SQL), and the customer key. A column
    none of them names cannot be read by them; one read only through `*` would be missed, and the tests' comparison
    with one run's tables would show it."""
    contract = SOURCES[source]
    texts = []
    for name in (name for name in names if source in _reads(name)):
        if name in PARTIALS:
            texts.append(partial_sql(name))
        else:
            texts += [path.read_text() for path in stage(name).source_files]
    code = "\n".join(texts)
    columns = [*contract.column_names, *key_columns(contract)]
    return tuple(c for c in columns if c == "customer_key" or re.search(rf"\b{c}\b", code))


# ---- phase 0: the customer sources cut into buckets --------------------------------------------------------------
def split_asset(source: str) -> str:
    """The asset of a customer source cut into buckets: `bucket_orders/bucket-0003.parquet`."""
    return f"{SPLIT_PREFIX}{source}"


def bucketed_names() -> tuple[str, ...]:
    """Every per-customer stage and partial, in run order."""
    work = plan()
    return (*work.first_assets, *(spec.name for spec in work.customers))


def split_sources(store: Warehouse, buckets: int) -> dict[str, int]:
    """Cut each customer source a bucket step reads into its buckets, one pass over the source: the asset
    `bucket_<source>`, one file per bucket, with the columns the per-customer stages and partials name
    (`source_columns`); returns the rows per source. A bucket step then reads its file instead of the whole
    source. Recorded in `shard_manifest` (entry `split`) with the bucket count, the columns and a signature of the
    sources' files (names, sizes, times): a step reads the files only while all three still hold, and cuts its
    rows out of the sources itself otherwise, so a split of other sources (a new ingest) is never read."""
    _check_split(0, buckets)
    names = bucketed_names()
    sources = [source for source in CUSTOMER_SOURCES if any(source in _reads(name) for name in names)]
    columns = {source: source_columns(source, names) for source in sources}
    store = replace(store, candidate=None)
    store.remove_file(MANIFEST, SPLIT_PHASE)
    signature = {source: _source_signature(store, source) for source in sources}
    rows = {source: _split(store, source, columns[source], buckets) for source in sources}
    retire_other_layouts(store, [split_asset(source) for source in sources], buckets)
    entry = pa.table({
        "step": [SPLIT_PHASE], "phase": [SPLIT_PHASE], "buckets": pa.array([buckets], pa.int32()),
        "signature": [json.dumps(signature, sort_keys=True)], "columns": [json.dumps(columns, sort_keys=True)],
        "finished_at": pa.array([datetime.now()], pa.timestamp("us")), "rows": [json.dumps(rows, sort_keys=True)],
    })
    _write_entry(store, entry)
    return rows


def _split(store: Warehouse, source: str, columns: Sequence[str], buckets: int) -> int:
    """One source's bucket files, written by one partitioned COPY into a scratch folder, then put in place."""
    asset = split_asset(source)
    folder = f"{store.scratch_dir(asset)}/.split-{uuid.uuid4().hex}"
    try:
        with store.session([source, "customer_keys"]) as con:
            run(con, "CREATE TEMP TABLE key_buckets AS SELECT customer_key, "  # one hash per customer, not per row
                     f"{customer_bucket_sql('customer_id', buckets)}::INTEGER AS bucket FROM customer_keys")
            selected = ", ".join(f"s.{c}" for c in columns)
            (count,) = run(con, f"""
                COPY (SELECT {selected}, k.bucket FROM {source} AS s JOIN key_buckets AS k USING (customer_key))
                TO {_quote(folder)} ({PARQUET}, PARTITION_BY (bucket))""")[0]
            for bucket in range(buckets):
                parts = sorted(glob.glob(f"{folder}/bucket={bucket}/*.parquet"))
                single = f"{folder}/bucket-{bucket:04d}.parquet"
                if len(parts) == 1:
                    os.replace(parts[0], single)
                else:  # none (an empty bucket: an empty file of the columns), or several to be made one
                    rows = f"read_parquet([{', '.join(map(_quote, parts))}])" if parts else \
                        f"(SELECT {', '.join(columns)} FROM {source} LIMIT 0)"
                    run(con, f"COPY (SELECT * FROM {rows}) TO {_quote(single)} ({PARQUET})")
                store.put_file(asset, bucket_key(bucket, buckets), single)
        return int(count)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _source_signature(store: Warehouse, source: str) -> str:
    """A hash of a source's files: their names, sizes and modification times (ETags on object storage)."""
    folder = store.asset_dir(source)
    if store.storage.remote:
        entries = store.storage.fs.ls(folder, detail=True)
        parts = [f"{os.path.basename(e['name'])}:{e.get('size')}:{e.get('ETag') or e.get('LastModified')}"
                 for e in entries]
    elif os.path.isdir(folder):
        found = [e for e in os.scandir(folder) if e.name.endswith(".parquet") and e.is_file()]
        parts = [f"{e.name}:{e.stat().st_size}:{e.stat().st_mtime_ns}" for e in found]
    else:
        parts = []
    return hashlib.md5("\n".join(sorted(parts)).encode()).hexdigest()


def _split_covers(store: Warehouse, buckets: int, wanted: Mapping[str, Sequence[str]]) -> bool:
    """Whether the split is of this bucket count, of the sources as they are now, with the columns wanted."""
    path = store.partition_path(MANIFEST, SPLIT_PHASE)
    if not store.storage.exists(path):
        return False
    with store.session() as con:
        found = run(con, f"SELECT buckets, signature, columns FROM read_parquet({_quote(path)})")
    if len(found) != 1 or found[0][0] != buckets:
        return False
    signatures, columns = json.loads(found[0][1]), json.loads(found[0][2])
    return all(
        set(names) <= set(columns.get(source, ())) and signatures.get(source) == _source_signature(store, source)
        for source, names in wanted.items()
    )


# ---- phase 1 ---------------------------------------------------------------------------------------------------
def bucket_partials(store: Warehouse, tuning: Tuning, as_of: datetime, bucket: int, buckets: int) -> dict[str, int]:
    """Phase 1 for one bucket: write its per-customer tables that item-side stages read, and its partial aggregates,
    as the bucket's files (`bucket-0003`); returns the rows written per table. With one bucket: those stages as one
    run computes them."""
    work = plan()
    if buckets == 1:
        _check_bucket(bucket, 1)
        rows = {spec.name: run_stage(store, spec, tuning, as_of) for spec in work.first}
        retire_other_layouts(store, work.first_assets, 1)
        _retire_manifests(store, PARTIALS_PHASE, 1)
        return rows
    _check_bucket(bucket, buckets)
    _forget(store, PARTIALS_PHASE, bucket)
    rows = _bucket_phase(store, work.first_assets, tuning, as_of, bucket, buckets)
    _finish(store, PARTIALS_PHASE, bucket, buckets, tuning, as_of, rows, work.first_assets)
    return rows


def _bucket_phase(
    store: Warehouse, names: list[str], tuning: Tuning, as_of: datetime, bucket: int, buckets: int
) -> dict[str, int]:
    """The bucket's files of `names`, in order, in one session: each written as soon as it is computed, and read
    from its file by the ones after it."""
    with _bucket_session(store, names, tuning, as_of, bucket, buckets) as con:
        return {name: _write_bucket(store, con, name, tuning, bucket, buckets) for name in names}


# ---- phase 2 ---------------------------------------------------------------------------------------------------
def item_side(store: Warehouse, tuning: Tuning, as_of: datetime, buckets: int) -> dict[str, int]:
    """Phase 2, once: every item-side table (`data.parquet`), in run order, from the partials of all `buckets`
    where the stage is in COMBINES, else over its whole inputs; returns the rows written per table. Refuses
    (ShardError) while a bucket has not finished phase 1 with this as-of time, tuning and bucket count."""
    work = plan()
    if buckets > 1:
        _require(store, PARTIALS_PHASE, range(buckets), buckets, tuning, as_of)
    return {spec.name: _item_stage(store, spec, tuning, as_of, buckets, checked=True) for spec in work.item}


def item_stage(store: Warehouse, name: str, tuning: Tuning, as_of: datetime, buckets: int) -> int:
    """One item-side table of phase 2, for a caller that runs (writes, audits, publishes) each table as a step of
    its own: its item-side inputs first, in `plan().item` order. Refuses (ShardError) unless every bucket of each
    partial (or per-customer table) it reads is finished with this as-of time, tuning and bucket count, by a
    phase-1 step or a `record_bucket` entry. `store` may stage `name`: the table is then the candidate's, and
    its `item-<name>` entry is only removed (phase 3's `bucket_customers` wants the entry of a published table)."""
    spec = stage(name)
    if spec.split is not Split.NONE:
        raise ValueError(f"'{name}' is a per-customer stage")
    return _item_stage(store, spec, tuning, as_of, buckets)


def _item_stage(
    store: Warehouse, spec: Stage, tuning: Tuning, as_of: datetime, buckets: int, checked: bool = False
) -> int:
    """The table, and its manifest entry (`item-<name>`) when split and written in place."""
    if buckets == 1:
        store.remove_file(MANIFEST, _manifest_key(ITEM_PHASE, spec.name))
        return run_stage(store, spec, tuning, as_of)
    if not checked:
        _require_buckets(store, _bucketed_reads(spec), buckets, tuning, as_of)
    staged = store.candidate is not None and store.candidate.asset == spec.name
    _forget(store, ITEM_PHASE, spec.name)
    rows = _item_rows(store, spec, tuning, as_of, buckets)
    if not staged:
        _finish(store, ITEM_PHASE, spec.name, buckets, tuning, as_of, {spec.name: rows}, ())
    return rows


def _bucketed_reads(spec: Stage) -> tuple[str, ...]:
    """The bucket files an item-side stage reads: its partials, else its per-customer stage inputs."""
    return partial_names(spec.name) or tuple(
        name for name in spec.inputs if customer_keyed(name) and name not in CUSTOMER_SOURCES
    )


def _item_rows(store: Warehouse, spec: Stage, tuning: Tuning, as_of: datetime, buckets: int) -> int:
    bucketed = [name for name in spec.inputs if customer_keyed(name) and name not in CUSTOMER_SOURCES]
    combine = COMBINES.get(spec.name)
    whole = [name for name in spec.inputs if combine is None and name not in bucketed]
    broadcast = [name for name in spec.inputs if not customer_keyed(name)]
    with store.session(broadcast if combine else whole, variables=variables(tuning, as_of)) as con:
        # a combined stage's prepared tables are its partials, every bucket's; a per-customer input this layout's files
        tables = {PARTIALS[name].sql: name for name in combine.partials} if combine else {n: n for n in bucketed}
        for view, name in tables.items():
            files = ", ".join(_quote(store.partition_path(name, bucket_key(b, buckets))) for b in range(buckets))
            run(con, f"CREATE TEMP VIEW {view} AS SELECT * FROM read_parquet([{files}], union_by_name = true)")
        if combine is None:
            return write_stage(store, con, spec, tuning)
        return store.write(con, spec.name, spec.sql(con, tuning), order_by=spec.order_by)


# ---- phase 3 ---------------------------------------------------------------------------------------------------
def bucket_customers(store: Warehouse, tuning: Tuning, as_of: datetime, bucket: int, buckets: int) -> dict[str, int]:
    """Phase 3 for one bucket: the remaining per-customer tables (the blend, the top N, the placement lists, …) of
    its customers, as the bucket's files, over the item-side tables and the bucket's phase-1 files; returns the rows
    written per table. Refuses (ShardError) unless the bucket's partials and the item side are finished with this
    as-of time, tuning and bucket count."""
    work = plan()
    names = [spec.name for spec in work.customers]
    if buckets == 1:
        _check_bucket(bucket, 1)
        rows = {spec.name: run_stage(store, spec, tuning, as_of) for spec in work.customers}
        retire_other_layouts(store, names, 1)
        _retire_manifests(store, CUSTOMERS_PHASE, 1)
        return rows
    _check_bucket(bucket, buckets)
    _require(store, PARTIALS_PHASE, [bucket], buckets, tuning, as_of)
    _require(store, ITEM_PHASE, [spec.name for spec in work.item], buckets, tuning, as_of)
    _forget(store, CUSTOMERS_PHASE, bucket)
    rows = _bucket_phase(store, names, tuning, as_of, bucket, buckets)
    _finish(store, CUSTOMERS_PHASE, bucket, buckets, tuning, as_of, rows, names)
    return rows


# ---- manifest and layouts ----------------------------------------------------------------------------------------
def tuning_fingerprint(tuning: Tuning) -> str:
    """A short hash of every tuning value: a step's partials are only combined with others of the same tuning."""
    return hashlib.md5(json.dumps(tuning.as_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _manifest_key(phase: str, part: int | str | None) -> str:
    """A step's entry: `partials-bucket-0003`, `customers-bucket-0003`, `item-product_popularity`."""
    if isinstance(part, str):
        return f"item-{part}"
    return phase if part is None else f"{phase}-bucket-{part:04d}"


def _phase_assets(phase: str) -> list[str]:
    """The bucketed assets a batch phase writes."""
    work = plan()
    return work.first_assets if phase == PARTIALS_PHASE else [s.name for s in work.customers]


def _forget(store: Warehouse, phase: str, part: int | str | None) -> None:
    """Remove a step's entry; a bucket's step also removes the `record_bucket` entries of the files it rewrites."""
    store.remove_file(MANIFEST, _manifest_key(phase, part))
    if isinstance(part, int):
        for asset in _phase_assets(phase):
            store.remove_file(MANIFEST, _asset_entry(asset, part))


def _entry(step: str, phase: str, buckets: int, tuning: Tuning, as_of: datetime, rows: dict[str, int]) -> pa.Table:
    return pa.table({
        "step": [step], "phase": [phase], "buckets": pa.array([buckets], pa.int32()),
        "as_of": pa.array([as_of], pa.timestamp("us")), "tuning": [tuning_fingerprint(tuning)],
        "finished_at": pa.array([datetime.now()], pa.timestamp("us")), "rows": [json.dumps(rows, sort_keys=True)],
    })


def _write_entry(store: Warehouse, entry: pa.Table) -> None:
    with store.session() as con:
        con.register("manifest_entry", entry)
        store.write(con, MANIFEST, "SELECT * FROM manifest_entry", partition=entry["step"][0].as_py())


def _finish(
    store: Warehouse, phase: str, part: int | str, buckets: int, tuning: Tuning, as_of: datetime,
    rows: dict[str, int], assets: Iterable[str],
) -> None:
    """Record the step as finished; the last bucket of a phase to finish retires the files of other layouts."""
    _write_entry(store, _entry(_manifest_key(phase, part), phase, buckets, tuning, as_of, rows))
    if isinstance(part, int) and not unfinished(store, phase, buckets, tuning, as_of):
        retire_other_layouts(store, assets, buckets)
        _retire_manifests(store, phase, buckets)


def unfinished(store: Warehouse, phase: str, buckets: int, tuning: Tuning, as_of: datetime) -> list[int]:
    """The buckets whose `phase` ("partials" or "customers") is not finished with this as-of time, tuning and
    bucket count (a bucket that failed, was killed or has not run)."""
    return _missing(store, phase, range(buckets), buckets, tuning, as_of)


def _missing(
    store: Warehouse, phase: str, parts: Iterable[int | str], buckets: int, tuning: Tuning, as_of: datetime
) -> list:
    """The parts (buckets, item-side tables) of `phase` without an entry of this as-of time, tuning and count."""
    keys = {part: _manifest_key(phase, part) for part in parts}
    matching = _matching_entries(store, keys.values(), buckets, tuning, as_of)
    return [part for part, key in keys.items() if key not in matching]


def _matching_entries(
    store: Warehouse, keys: Iterable[str], buckets: int, tuning: Tuning, as_of: datetime
) -> set[str]:
    """Of the manifest entries `keys`, those present with this bucket count, as-of time and tuning (one query)."""
    present = {os.path.basename(f) for f in store.files(MANIFEST)}
    paths = [store.partition_path(MANIFEST, key) for key in keys]
    found = [path for path in paths if os.path.basename(path) in present]
    if not found:
        return set()
    entries = []
    with store.session() as con:
        for path in found:  # one by one: another bucket's step may remove its entry meanwhile (it started again)
            try:
                entries += run(con, f"SELECT step, buckets, as_of, tuning FROM read_parquet({_quote(path)})")
            except duckdb.IOException:
                if store.storage.exists(path):
                    raise
    wanted = (buckets, as_of, tuning_fingerprint(tuning))
    return {step for step, *values in entries if tuple(values) == wanted}


def _require(
    store: Warehouse, phase: str, parts: Iterable[int | str], buckets: int, tuning: Tuning, as_of: datetime
) -> None:
    missing = _missing(store, phase, parts, buckets, tuning, as_of)
    if missing:
        which = f"the item side ({', '.join(missing)})" if phase == ITEM_PHASE else \
            f"bucket(s) {', '.join(map(str, missing))} of {buckets}"
        raise ShardError(
            f"{which}: no finished '{phase}' step as of {as_of.isoformat()} with this tuning and {buckets} buckets "
            f"(run it first; see {MANIFEST})"
        )


# ---- per (asset, bucket): the entries of a caller that runs each as a step of its own -------------------------
def _asset_entry(asset: str, bucket: int) -> str:
    """An (asset, bucket)'s entry: `customer_segments-bucket-0003`."""
    return f"{asset}-bucket-{bucket:04d}"


def _phase_of(asset: str) -> str:
    """The batch phase that writes a bucketed asset (its entries count for the asset's buckets too)."""
    for phase in (PARTIALS_PHASE, CUSTOMERS_PHASE):
        if asset in _phase_assets(phase):
            return phase
    raise ValueError(f"'{asset}' is neither a per-customer stage nor a partial: it has no buckets")


def record_bucket(store: Warehouse, asset: str, bucket: int, buckets: int, tuning: Tuning, as_of: datetime) -> None:
    """Record that the bucket's file of `asset` (a per-customer stage or a partial) is published as of `as_of`
    with this tuning and bucket count: entry `<asset>-bucket-0003` of `shard_manifest`. Call it after the file is
    in place (ShardError if it is not). The last bucket recorded removes the asset's entries of buckets beyond
    the count."""
    _phase_of(asset)
    _check_split(bucket, buckets)
    store = replace(store, candidate=None)
    path = store.partition_path(asset, bucket_key(bucket, buckets))
    if not store.storage.exists(path):
        raise ShardError(f"'{asset}' has no published file of bucket {bucket} of {buckets} ({path})")
    with store.session() as con:
        (rows,) = run(con, f"SELECT count(*) FROM read_parquet({_quote(path)})")[0]
    _write_entry(store, _entry(_asset_entry(asset, bucket), "bucket", buckets, tuning, as_of, {asset: int(rows)}))
    if not unfinished_buckets(store, asset, buckets, tuning, as_of):
        for path in store.files(MANIFEST):
            match = _ASSET_ENTRY_FILE.match(os.path.basename(path))
            if match and match.group(1) == asset and int(match.group(2)) >= buckets:
                store.remove_file(MANIFEST, os.path.basename(path).removesuffix(".parquet"))


def forget_bucket(store: Warehouse, asset: str, bucket: int) -> None:
    """Remove the bucket's entry of `asset` before its file is rewritten, and the entry of the batch step that
    wrote it (`partials-bucket-0003`, `customers-bucket-0003`), which vouches for the file as well."""
    phase = _phase_of(asset)
    if bucket < 0:
        raise ValueError(f"bucket {bucket} is negative")
    store = replace(store, candidate=None)
    store.remove_file(MANIFEST, _asset_entry(asset, bucket))
    store.remove_file(MANIFEST, _manifest_key(phase, bucket))


def unfinished_buckets(store: Warehouse, asset: str, buckets: int, tuning: Tuning, as_of: datetime) -> list[int]:
    """The buckets of `asset` (a per-customer stage or a partial) not finished with this as-of time, tuning and
    bucket count: neither a `record_bucket` entry nor the entry of the batch step that writes it matches (a
    bucket that failed, was killed, has not run, or ran for another night, tuning or count)."""
    phase = _phase_of(asset)
    _check_bucket(None, buckets)
    keys = {bucket: (_asset_entry(asset, bucket), _manifest_key(phase, bucket)) for bucket in range(buckets)}
    matching = _matching_entries(store, [key for pair in keys.values() for key in pair], buckets, tuning, as_of)
    return [bucket for bucket, pair in keys.items() if not matching & set(pair)]


def _require_buckets(
    store: Warehouse, assets: Iterable[str], buckets: int, tuning: Tuning, as_of: datetime
) -> None:
    missing = [f"'{asset}' bucket(s) {', '.join(map(str, unfinished))} of {buckets}"
               for asset in assets if (unfinished := unfinished_buckets(store, asset, buckets, tuning, as_of))]
    if missing:
        raise ShardError(
            f"{'; '.join(missing)}: not finished as of {as_of.isoformat()} with this tuning and {buckets} buckets "
            f"(run them first; see {MANIFEST})"
        )


def retire_other_layouts(store: Warehouse, assets: Iterable[str], buckets: int) -> None:
    """Remove the files of `assets` that belong to another bucket count: `data.parquet` when split, bucket files
    beyond the count (every one with one bucket). Other files (partitions of another kind) stay."""
    for asset in assets:
        for path in store.files(asset):
            name = os.path.basename(path)
            match = _BUCKET_FILE.match(name)
            if name == "data.parquet" and buckets > 1:
                store.remove_file(asset, None)
            elif match and (buckets == 1 or int(match.group(1)) >= buckets):
                store.remove_file(asset, name.removesuffix(".parquet"))


def _retire_manifests(store: Warehouse, phase: str, buckets: int) -> None:
    """Remove the phase's entries of another bucket count: its steps' (`partials-bucket-0007`) and the
    `record_bucket` entries of its assets beyond the count (every one with one bucket)."""
    assets = set(_phase_assets(phase))
    for path in store.files(MANIFEST):
        name = os.path.basename(path)
        step, entry = _MANIFEST_FILE.match(name), _ASSET_ENTRY_FILE.match(name)
        match = step if step and step.group(1) == phase else entry if entry and entry.group(1) in assets else None
        if match and (buckets == 1 or int(match.group(2)) >= buckets):
            store.remove_file(MANIFEST, name.removesuffix(".parquet"))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ---- all of it, in processes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One phase of one bucket (bucket None: phase 2), as a process runs it."""

    phase: str
    bucket: int | None
    buckets: int
    store: Warehouse
    tuning: Tuning
    as_of: datetime


@dataclass(frozen=True)
class StepResult:
    phase: str
    bucket: int | None
    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int  # the process's highest resident set size (getrusage)
    rows: dict[str, int] = field(default_factory=dict)
    pid: int = 0


def run_step(step: Step) -> StepResult:
    """Run one step in this process and measure it."""
    wall, cpu = time.perf_counter(), time.process_time()
    if step.phase == SPLIT_PHASE:
        rows = split_sources(step.store, step.buckets)
    elif step.phase == PARTIALS_PHASE:
        rows = bucket_partials(step.store, step.tuning, step.as_of, step.bucket, step.buckets)
    elif step.phase == ITEM_PHASE:
        rows = item_side(step.store, step.tuning, step.as_of, step.buckets)
    elif step.phase == CUSTOMERS_PHASE:
        rows = bucket_customers(step.store, step.tuning, step.as_of, step.bucket, step.buckets)
    else:
        raise ValueError(f"unknown phase {step.phase!r}")
    return StepResult(
        step.phase, step.bucket, time.perf_counter() - wall, time.process_time() - cpu,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rows, os.getpid(),
    )


@dataclass(frozen=True)
class ShardedRun:
    buckets: int
    processes: int
    seconds: float  # wall time of the whole run
    steps: tuple[StepResult, ...]

    def phase(self, name: str) -> list[StepResult]:
        return [s for s in self.steps if s.phase == name]

    @property
    def work_seconds(self) -> float:
        """The steps' wall times added up: what the run costs on one core at a time."""
        return sum(s.seconds for s in self.steps)

    @property
    def critical_path_seconds(self) -> float:
        """The split, plus the slowest bucket of phase 1, plus phase 2, plus the slowest bucket of phase 3: the
        run's length with a process per bucket."""
        return sum(max((s.seconds for s in self.phase(p)), default=0.0)
                   for p in (SPLIT_PHASE, PARTIALS_PHASE, ITEM_PHASE, CUSTOMERS_PHASE))

    def as_dict(self) -> dict:
        return {"buckets": self.buckets, "processes": self.processes, "seconds": self.seconds,
                "work_seconds": self.work_seconds, "critical_path_seconds": self.critical_path_seconds,
                "steps": [asdict(s) for s in self.steps]}


def run_sharded(
    store: Warehouse,
    tuning: Tuning,
    as_of: datetime,
    buckets: int,
    processes: int = 2,
    step: Callable[[Step], StepResult] = run_step,
) -> ShardedRun:
    """Every derived stage over `buckets` buckets: the sources cut into buckets (`split_sources`, with more than
    one), phase 1 per bucket, phase 2 once, phase 3 per bucket, each step in a process of its own, at most
    `processes` at a time: the split and phase 2 with the store's DuckDB budget, each bucket's step with its share
    (`bucket_share`). `step` (a module-level function, run in the processes) is `run_step` unless a caller wraps
    it."""
    _check_bucket(None, buckets)
    if processes < 1:
        raise ValueError("processes must be >= 1")
    store = replace(store, candidate=None)
    started = time.perf_counter()
    results: list[StepResult] = []
    phases = [(PARTIALS_PHASE, range(buckets)), (ITEM_PHASE, [None]), (CUSTOMERS_PHASE, range(buckets))]
    bucket_store = bucket_share(store, buckets, processes)
    for phase, each in [(SPLIT_PHASE, [None])] * (buckets > 1) + phases:
        on = store if each == [None] else bucket_store
        steps = [Step(phase, bucket, buckets, on, tuning, as_of) for bucket in each]
        results += in_processes(steps, processes, step)
    return ShardedRun(buckets, processes, time.perf_counter() - started, tuple(results))


def bucket_share(store: Warehouse, buckets: int, processes: int) -> Warehouse:
    """The store of a bucket's step: the buckets of a phase together get the run's DuckDB budget, each 1/`buckets`
    of its memory limit (a bucket's rows are about 1/`buckets` of the whole) and its threads split between the
    steps that run at once. With one bucket, the whole budget."""
    if buckets == 1:
        return store
    return store.share(buckets, min(processes, buckets))


def in_processes(
    steps: Sequence[Step], processes: int, step: Callable[[Step], StepResult] = run_step
) -> list[StepResult]:
    """Run the steps, each in a new process (forked from a server that has imported this module), at most
    `processes` at a time; raises ShardError naming every step that failed, after the others have ended."""
    try:
        return each_in_a_process(step, steps, processes, [MODULE])
    except TasksFailed as failed:
        raise ShardError("; ".join(sorted(
            f"{steps[index].phase}{_of_bucket(steps[index])}: {type(error).__name__}: {error}"
            for index, error in failed.failures
        ))) from None


def _of_bucket(step: Step) -> str:
    return "" if step.bucket is None else f" of bucket {step.bucket} of {step.buckets}"


# ---- command line ------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description="Run the derived stages over customer buckets (lib/shards.py)."
    )
    parser.add_argument("step", choices=["all", SPLIT_PHASE, PARTIALS_PHASE, ITEM_PHASE, CUSTOMERS_PHASE])
    parser.add_argument("--root", required=True, help="the warehouse root")
    parser.add_argument("--buckets", type=int, required=True)
    parser.add_argument("--bucket", type=int, help="the bucket (partials, customers)")
    parser.add_argument("--as-of", help="ISO time (default: the newest event)")
    parser.add_argument("--processes", type=int, default=2, help="processes at a time (all)")
    parser.add_argument("--tuning", help="tuning values as a JSON object")
    parser.add_argument("--memory-limit", default="3GB")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    store = Warehouse(args.root, memory_limit=args.memory_limit, threads=args.threads)
    tuning = Tuning(**json.loads(args.tuning)) if args.tuning else Tuning()
    as_of = datetime.fromisoformat(args.as_of) if args.as_of else latest_event_time(store)
    if args.step == "all":
        result = run_sharded(store, tuning, as_of, args.buckets, args.processes).as_dict()
    else:
        if (args.bucket is None) != (args.step in (SPLIT_PHASE, ITEM_PHASE)):
            parser.error("--bucket is needed for partials and customers, and only for them")
        result = asdict(run_step(Step(args.step, args.bucket, args.buckets, store, tuning, as_of)))
    json.dump(result, sys.stdout, indent=2, default=str)
    print()


if __name__ == "__main__":  # run as the module itself, so the processes' steps are pickled by its name
    from recopipeline.lib.shards import main as module_main

    module_main()
