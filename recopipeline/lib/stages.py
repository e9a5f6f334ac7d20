"""The stage engine: every derived table of the warehouse as a spec, the order they run in, and one way to run one.

A stage reads its inputs (sources or other stages) as views named after them in one in-memory DuckDB session,
with every tuning value and the as-of time as `getvariable()` values, and writes one Parquet table in its row
order. Its compute is either `sql/<name>.sql` or a Python function `(con, tuning) -> SQL of the result`.

How a stage may be split is part of its spec:
- `Split.CUSTOMERS`: every output row belongs to one customer and depends only on that customer's rows of the
  customer-keyed inputs (the customer sources and the other per-customer stages) and on whole product-side
  tables. The hourly refresh recomputes exactly these stages for the customers of an hour (the blend also
  batches its customers itself, see lib/blend.py).
- `Split.NONE`: the stage is computed over its whole inputs (the item pairs batch their anchor products
  themselves, see lib/collaborative.py).

Everything that runs stages — the Dagster assets, the hourly refresh, `bench` and `evaluate` — calls `run_stage`
(or, for the hourly refresh, `compute_into`); the run order and "what must re-run after a tuning change" come
from the specs.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from datetime import datetime
from enum import Enum
from pathlib import Path

import duckdb

from recopipeline.lib import blend, collaborative, ease, keys, ranking
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.tuning import STRATEGIES, Tuning
from recopipeline.lib.warehouse import SQL_DIR, Warehouse, load_sql, run

Compute = Callable[[duckdb.DuckDBPyConnection, Tuning], str]

# Sources keyed by customer: a per-customer stage reads only the touched customers' rows of these. Stages read
# the key dictionaries (lib/keys.py) like sources: their source ingests write them.
CUSTOMER_SOURCES = ("customers", "customer_interactions", "orders", "cart_activity")


class Split(Enum):
    NONE = "none"
    CUSTOMERS = "per customer range"


@dataclass(frozen=True)
class Stage:
    name: str
    group: str
    inputs: tuple[str, ...]
    description: str
    order_by: str  # the row order the table is written in
    score_column: str | None = None  # summarised in the asset's metadata
    compute: Compute | None = None  # None: the SQL file sql/<name>.sql
    split: Split = Split.NONE
    reads: frozenset[str] = frozenset()  # tuning values read outside getvariable() (Python computes)
    kinds: frozenset[str] = frozenset()  # engines besides DuckDB, as the UI shows them
    rows_in_order: bool = False  # the compute gives its rows in `order_by` order: written as they come
    # sql/<name>.sql files whose results the compute reads as temp tables <name>, made once before the batches
    prepared: tuple[str, ...] = ()
    hourly: bool = False  # a whole-table stage cheap enough for the hourly job to recompute every hour

    @property
    def source_files(self) -> tuple[Path, ...]:
        """Where the computation is written: its SQL file, its Python function's module, or both."""
        files = [SQL_DIR / f"{name}.sql" for name in self.prepared]
        files += [SQL_DIR / f"{self.name}.sql"] if (SQL_DIR / f"{self.name}.sql").exists() else []
        if self.compute is not None:
            files.append(Path(sys.modules[self.compute.__module__].__file__))
        return tuple(files)

    def tuning_read(self) -> frozenset[str]:
        """Every tuning value the stage's result can depend on."""
        prepared = frozenset().union(*(sql_reads(name) for name in self.prepared))
        return (sql_reads(self.name) if self.compute is None else frozenset()) | prepared | self.reads

    def sql(self, con: duckdb.DuckDBPyConnection, tuning: Tuning) -> str:
        """The SQL of the stage's result in `con`, where its inputs are views and the variables are set."""
        return load_sql(self.name) if self.compute is None else self.compute(con, tuning)


_VARIABLE = re.compile(r"getvariable\('([a-z_0-9]+)'\)")


def sql_reads(name: str) -> frozenset[str]:
    """The tuning values `sql/<name>.sql` reads with getvariable()."""
    return frozenset(set(_VARIABLE.findall(load_sql(name))) & {f.name for f in fields(Tuning)})


_BLEND_WEIGHTS = frozenset({f"weight_{strategy}" for strategy in STRATEGIES} | {"ab_variants", "ab_salt"})

STAGES: tuple[Stage, ...] = (
    # behaviour
    Stage(
        "customer_segments", "behavior", ("customers", "customer_interactions", "orders"),
        "One row per known customer: activity summary and segment (new, returning, vip, at_risk).",
        order_by="customer_key", split=Split.CUSTOMERS,
    ),
    Stage(
        "customer_behavior_comprehensive", "behavior",
        ("customer_interactions", "products", "customer_segments"),
        "Every interaction up to the as-of time, scored once (event weight, recency weight) and summed per "
        "(customer, product), with the customer's segment and the product's category: exact sums its consumers "
        "add up further.",
        order_by="customer_key, product_key", score_column="weighted_score",
        split=Split.CUSTOMERS,
    ),
    Stage(
        "customer_product_affinity", "behavior", ("customer_behavior_comprehensive",),
        "How much each customer likes each product: event counts and recency-weighted affinity.",
        order_by="customer_key, product_key", score_column="weighted_affinity_score",
        # a projection of customer_behavior_comprehensive, read in its written order, which is this one
        split=Split.CUSTOMERS, rows_in_order=True,
    ),
    Stage(
        "customer_category_preferences", "behavior", ("customer_behavior_comprehensive", "orders", "products"),
        "Each customer's categories ranked by recency-weighted interest (deterministic rank).",
        order_by="customer_key, category_rank", score_column="weighted_category_score", split=Split.CUSTOMERS,
    ),
    Stage(
        "product_popularity", "behavior", ("customer_behavior_comprehensive", "products"),
        "Ranked popular available products, overall and per customer segment (trending weighted).",
        order_by="segment, popularity_rank, product_key", score_column="popularity_score",
        prepared=("popularity_totals",),  # the sums over customers, ranked after (and summed over buckets: shards)
    ),
    Stage(
        "product_trending", "behavior", ("customer_interactions", "products"),
        "Available products whose interest in the last 24 hours grows beyond their daily mean of the 7 days "
        "before (smoothed), best first; refreshed hourly, served as the trending list.",
        order_by="trending_rank", score_column="trending_score", hourly=True,
        prepared=("trending_interest",),  # the sums over customers, scored after (and summed over buckets: shards)
    ),
    Stage(
        "product_repurchase_rates", "behavior", ("orders",),
        "How likely each bought product is to be bought again: smoothed repeat-buyer rate and recent sales "
        "trend, combined into the factor the repurchase strategy weighs a customer's own orders by.",
        order_by="product_key", score_column="repurchase_factor",
    ),
    # similarity
    Stage(
        "product_similarity", "similarity", ("products",),
        "Attribute similarity (category, brand, price band), both directions, top-K per product.",
        order_by="product_key_1, similarity_rank", score_column="attribute_similarity_score",
    ),
    Stage(
        "products_bought_together", "similarity", ("orders",),
        "Pairs in the same order at least min_support times, both directions, with a correct Jaccard.",
        order_by="product_key_1, product_key_2", score_column="co_purchase_similarity",
    ),
    Stage(
        "complementary_products", "similarity", ("products_bought_together", "orders"),
        "Directional A -> B complements from co-purchase similarity and sequential purchase.",
        order_by="product_key_1, complementary_rank", score_column="complementary_score",
    ),
    Stage(
        "collaborative_item_similarity", "similarity", ("customer_product_affinity",),
        "Item-to-item cosine similarity over customers' affinities, top-K neighbours per product.",
        order_by="product_key_1, cf_rank", score_column="cf_similarity",
        # a compiled loop over anchor products in batches; sql/collaborative_item_similarity.sql is its specification
        compute=collaborative.collaborative_item_similarity, reads=sql_reads("collaborative_item_similarity"),
        kinds=frozenset({"numpy"}), rows_in_order=True,
        prepared=("collaborative_strongest_products",),  # each customer's strongest products, read by the loop
    ),
    Stage(
        ease.ASSET, "similarity", ease.INPUTS,
        "EASE (Steck 2019) item-item weights from purchases, fitted in closed form over the most-bought "
        "products (ease_max_items); the top ease_top_k positive weights per product. Feeds the 'ease' strategy.",
        order_by="product_key_1, ease_rank", score_column="ease_weight",
        compute=ease.ease_item_similarity, reads=frozenset({"ease_l2", "ease_max_items", "ease_top_k"}),
        kinds=frozenset({"numpy"}),
    ),
    # recommendations
    Stage(
        "product_recommendations", "recommendations",
        ("products", "orders", "customer_keys", "product_keys", "customer_segments", "customer_product_affinity",
         "customer_category_preferences", "product_popularity", "product_repurchase_rates", "product_similarity", "complementary_products",
         "collaborative_item_similarity", "ease_item_similarity", "product_trending"),
        "Every strategy's candidates, normalised and blended into one row per (customer, product), "
        "available and not yet purchased, ranked with a deterministic tie-break.",
        order_by="customer_key, recommendation_rank", score_column="recommendation_score",
        # numpy over integer ids, batched inside; sql/product_recommendations.sql is its specification
        compute=blend.product_recommendations, reads=sql_reads("product_recommendations") | _BLEND_WEIGHTS,
        kinds=frozenset({"numpy"}), split=Split.CUSTOMERS, rows_in_order=True,
    ),
    Stage(
        ranking.FEATURES_STAGE, "recommendations",
        ("product_recommendations", "products", "orders", "customer_segments", "customer_product_affinity",
         "customer_category_preferences", "product_repurchase_rates", "product_popularity", "product_trending"),
        "What the learned ranking knows of each candidate, as of the as-of time: the blend's score and rank, each "
        "strategy's normalised score, the customer's activity, their affinity to the product, its category and "
        "brand, and the product's popularity, repeat rate, trend, price and age.",
        order_by="customer_key, blend_rank", split=Split.CUSTOMERS,
    ),
    Stage(
        ranking.MODEL, "recommendations", (),  # the sources its training stages read (below)
        "A LightGBM ranking model that ranks the blend's candidates, trained on what customers ordered in the "
        "ranking_window_days before the as-of time from the features as of its start, and promoted only when it "
        "beats the blend's order on held-out customers by ranking_promotion_margin.",
        order_by="trained_as_of", compute=ranking.ranking_model, kinds=frozenset({"lightgbm"}),
        reads=ranking.RANKING_VALUES,  # and every value its upstream stages read (below)
    ),
    Stage(
        "learned_recommendations", "recommendations", ("product_recommendations", ranking.FEATURES_STAGE, ranking.MODEL),
        "The learned model's rank and score (mapped to (0, 1)) of each of the blend's candidates, when the model is "
        "promoted; empty otherwise, and the top N takes the blend's order. Type, evidence and variant stay the "
        "blend's.",
        order_by="customer_key, recommendation_rank", score_column="recommendation_score",
        compute=ranking.learned_recommendations, reads=ranking.RANKING_VALUES | {"exclude_purchased"},
        kinds=frozenset({"lightgbm"}),
        split=Split.CUSTOMERS, rows_in_order=True,  # the blend's order, or the learned one sorted in its SQL
    ),
    Stage(
        "customer_top_recommendations", "recommendations",
        ("product_recommendations", "learned_recommendations", "customer_keys", "products", "merchandising_rules", "customer_segments",
         "orders", "customer_product_affinity"),
        "Each customer's top N recommendations with type, score and evidence, the merchandising rules in force "
        "applied (exclude, boost, bury, pin; each rule that moved a row named in its evidence).",
        order_by="customer_id, recommendation_rank", score_column="recommendation_score", split=Split.CUSTOMERS,
        prepared=("merchandising_rule_products",),  # the products each rule in force matches, made once
    ),
    Stage(
        "customer_placement_recommendations", "recommendations",
        ("customer_behavior_comprehensive", "orders", "products", "customer_keys", "product_repurchase_rates"),
        "Each customer's recently_viewed list (the products last viewed, newest first) and buy_it_again list "
        "(the products ordered, by the repurchase score), available products only; their merchandising rules "
        "are applied when answering.",
        order_by="customer_id, placement, recommendation_rank", score_column="recommendation_score",
        split=Split.CUSTOMERS, prepared=("customer_repurchase_scores",),
    ),
)
STAGES_BY_NAME = {stage.name: stage for stage in STAGES}


def upstream_stages(name: str) -> list[Stage]:
    """The stages `name` is computed from, and itself, in run order."""
    needed = {name}
    for spec in reversed(stage_order()):
        if spec.name in needed:
            needed |= set(spec.inputs)
    return [spec for spec in stage_order() if spec.name in needed]


def _with_model_reads(stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
    """The model stage reads the sources its training stages read, and every tuning value they read."""
    training = upstream_stages(ranking.FEATURES_STAGE)
    reads = frozenset().union(*(spec.tuning_read() for spec in training))
    sources = tuple(sorted({name for spec in training for name in spec.inputs} - {spec.name for spec in training}))
    return tuple(replace(s, inputs=sources, reads=s.reads | reads) if s.name == ranking.MODEL else s for s in stages)


def stage(name: str) -> Stage:
    return STAGES_BY_NAME[name]


def stage_order(stages: Iterable[Stage] | None = None) -> list[Stage]:
    """The stages (default: all) in an order where every stage comes after its inputs (ties by name)."""
    stages = STAGES if stages is None else stages
    done: set[str] = set(SOURCES) | set(keys.OWNER)
    ordered: list[Stage] = []
    pending = {s.name: s for s in sorted(stages, key=lambda s: s.name)}
    while pending:
        ready = [s for s in pending.values() if set(s.inputs) <= done]
        if not ready:
            raise ValueError(f"stages with unmet inputs: {', '.join(pending)}")
        for ready_stage in ready:
            ordered.append(ready_stage)
            done.add(ready_stage.name)
            del pending[ready_stage.name]
    return ordered


STAGES = _with_model_reads(STAGES)
STAGES_BY_NAME = {stage.name: stage for stage in STAGES}


def per_customer_stages() -> list[Stage]:
    """The stages the hourly refresh recomputes for the customers of an hour, in run order."""
    return [s for s in stage_order() if s.split is Split.CUSTOMERS]


def hourly_stages() -> list[Stage]:
    """The whole-table stages the hourly job recomputes besides the per-customer refresh, in run order."""
    return [s for s in stage_order() if s.hourly]


def customer_keyed(name: str) -> bool:
    """Whether the table's rows each belong to one customer (a customer source or a per-customer stage)."""
    return name in CUSTOMER_SOURCES or (name in STAGES_BY_NAME and STAGES_BY_NAME[name].split is Split.CUSTOMERS)


def shared_tables() -> list[str]:
    """Inputs of the per-customer stages read whole: the catalogue and the product-side tables."""
    inputs = {name for s in per_customer_stages() for name in s.inputs}
    return sorted(name for name in inputs if not customer_keyed(name))


def stages_to_rerun(before: Tuning | None, after: Tuning) -> list[str]:
    """The stages (in run order) whose output can change between two configurations."""
    ordered = stage_order()
    if before is None:
        return [s.name for s in ordered]
    changed = {f.name for f in fields(Tuning) if getattr(before, f.name) != getattr(after, f.name)}
    dirty: set[str] = set()
    for s in ordered:
        if s.tuning_read() & changed or dirty & set(s.inputs):
            dirty.add(s.name)
    return [s.name for s in ordered if s.name in dirty]


def variables(tuning: Tuning, as_of: datetime) -> dict:
    """The `getvariable()` values of a stage session."""
    return {**tuning.as_dict(), "as_of": as_of}


def run_stage(store: Warehouse, spec: Stage, tuning: Tuning, as_of: datetime) -> int:
    """Compute one stage over the warehouse and write its table; returns the rows written."""
    with store.session(spec.inputs, variables=variables(tuning, as_of)) as con:
        return write_stage(store, con, spec, tuning)


def run_stages(store: Warehouse, tuning: Tuning, as_of: datetime, names: Iterable[str] | None = None) -> dict[str, int]:
    """Run the named stages (default: all) in dependency order; returns rows written per stage."""
    wanted = set(names) if names is not None else None
    return {
        s.name: run_stage(store, s, tuning, as_of) for s in stage_order() if wanted is None or s.name in wanted
    }


def write_stage(
    store: Warehouse, con: duckdb.DuckDBPyConnection, spec: Stage, tuning: Tuning, partition: str | None = None
) -> int:
    """Write the stage's table (or its file `partition`, a customer bucket's) from `con` (a session over its
    inputs); returns the rows written.

    Its prepared tables are made first.
    """
    _prepare(con, spec)
    if spec.rows_in_order:  # no sort: DuckDB keeps the rows in the order the compute gives them (this session)
        run(con, "SET SESSION preserve_insertion_order = true")
        try:
            return store.write(con, spec.name, spec.sql(con, tuning), partition=partition)
        finally:
            run(con, "RESET SESSION preserve_insertion_order")
    return store.write(con, spec.name, spec.sql(con, tuning), partition=partition, order_by=spec.order_by)


def compute_into(con: duckdb.DuckDBPyConnection, spec: Stage, tuning: Tuning) -> None:
    """Create the stage's result as the temp table `<name>` in `con` (whose tables hold the stage's inputs); its
    prepared tables are made first."""
    _prepare(con, spec)
    run(con, f"CREATE TEMP TABLE {spec.name} AS {spec.sql(con, tuning)}")


def _prepare(con: duckdb.DuckDBPyConnection, spec: Stage) -> None:
    for name in spec.prepared:
        run(con, f"CREATE OR REPLACE TEMP TABLE {name} AS {load_sql(name)}")


class NoEventsError(ValueError):
    """There is no event to measure recency from."""


def latest_event_time(store: Warehouse) -> datetime:
    """The newest interaction or order in the warehouse: the default as-of time."""
    parts = [
        f"SELECT max({column}) AS t FROM {store.scan(asset)}"
        for asset, column in (("customer_interactions", "interaction_timestamp"), ("orders", "order_timestamp"))
        if store.exists(asset)
    ]
    if not parts:
        raise NoEventsError("no events to measure recency from: materialize the sources first")
    with store.session() as con:
        (latest,) = con.sql(f"SELECT max(t) FROM ({' UNION ALL '.join(parts)})").fetchall()[0]
    if latest is None:
        raise NoEventsError("the event sources are empty: set RECOPIPELINE_AS_OF to build from no events")
    return latest
