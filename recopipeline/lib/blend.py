"""The blend (product_recommendations) over integer ids, with the rows of `sql/product_recommendations.sql`.

Method. DuckDB numbers the customer and product keys densely in key order (so number order is the SQL's key
order) and the inputs are read once into numpy: the per-customer tables sorted by customer, the product-side tables
as neighbour lists (CSR, rows = source product) of available candidates. Customers are then blended in batches of
consecutive numbers, each bounded in customers and in expanded rows, so memory does not grow with the customers:
- every strategy's rows of the batch are built with integer gathers: an item-to-item strategy gives one row per
  (customer, candidate, source product) from the seeds' (for EASE: the bought products') neighbour lists, the
  others one row per candidate (their per-row arithmetic is DuckDB's, done in SQL); rows of purchased products
  (and, for collaborative, of products the customer interacted with) are dropped through per-batch flags;
- one sort of packed integer keys groups the rows per (customer, product, strategy); contributions are summed as
  integers of 1e-12, each rounded first, which is exactly the SQL's sum over DECIMAL(38, 12);
- each candidate is divided by its customer's best eligible score in the strategy and weighted by the customer's
  A/B variant; the strategies of a (customer, product) are adjacent, so blending is a segmented sum; one sort of
  (customer, 1e9 - rounded score, product) ranks and cuts to `candidates_per_customer`;
- evidence lists the sources of the kept item-to-item rows (contribution desc, then key), named by their ids
  (product_keys) only in the output.
The result is a view over an Arrow stream: reading it computes the batches (two threads ahead of the reader) in
(customer_key, recommendation_rank) order. DuckDB's rounding is reproduced where it matters: DOUBLE to DECIMAL
rounds the scaled double half away from zero; DECIMAL to DOUBLE and round(x, 9) are correctly rounded from the
exact decimal value.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recopipeline.lib.tuning import STRATEGIES, Tuning
from recopipeline.lib.warehouse import run

RESULT = "product_recommendations_blend"  # the view product_recommendations() registers
SEED_STRATEGIES = {  # strategy -> (neighbour table, score column, rank column), scored from the customer's seeds
    "affinity_similar": ("product_similarity", "attribute_similarity_score", "similarity_rank"),
    "collaborative": ("collaborative_item_similarity", "cf_similarity", "cf_rank"),
    "complementary": ("complementary_products", "complementary_score", "complementary_rank"),
}
ITEM_STRATEGIES = (*SEED_STRATEGIES, "ease")  # their evidence lists source products
STRATEGY = {name: index for index, name in enumerate(STRATEGIES)}  # a strategy's priority is its index + 1
STRATEGY_BITS = 3  # a strategy's number in a row key
ITEM_MASK = np.array([s in ITEM_STRATEGIES for s in STRATEGIES] + [False] * ((1 << STRATEGY_BITS) - len(STRATEGIES)))
UNITS = 10**12  # DECIMAL(38, 12): sums are exact in units of 1e-12
MAX_BATCH_ROWS = 1 << 22  # expanded candidate rows per batch (about 200 MB of numpy arrays)
MAX_BATCH_CELLS = 1 << 27  # customers x products per batch (the membership flags, one byte per cell)
WORKERS = 2  # threads computing batches
OWNED, PURCHASED = 1, 2  # membership flags: the customer has an affinity row / bought the product
_CUSTOMER_BITS, _SCORE_BITS, _RELATIVE_BITS = 13, 30, 21  # the ranking key: customer, 1e9 - score, position


@dataclass(frozen=True)
class VariantWeights:
    """The blend weights of each A/B variant and the hash ranges that assign customers to variants."""

    variants: tuple[str, ...]
    weights: np.ndarray  # variants x STRATEGIES
    upper_bounds: np.ndarray  # a customer with variant hash h is in the first variant whose upper bound is > h
    total_weights: np.ndarray  # per variant: the sum of its weights, as the SQL's DECIMAL sum gives it

    @property
    def active(self) -> np.ndarray:
        """Per strategy: whether some variant gives it a weight > 0."""
        return self.weights.max(axis=0) > 0


def variant_weights(tuning: Tuning) -> VariantWeights:
    """The weights per variant in priority order (`Tuning.variant_strategy_weights`) and the variants' buckets."""
    per_variant = tuning.variant_strategy_weights()
    assert len(STRATEGIES) < 16, "the strength key packs a strategy's priority into 4 bits"
    buckets = tuning.experiment().buckets()
    names = tuple(name for name, _, _ in buckets)
    weights = np.array([[per_variant[name][s] for s in STRATEGIES] for name in names], dtype=np.float64)
    totals = [sum(_half_away_scalar(w * UNITS) for w in row) / UNITS for row in weights.tolist()]
    return VariantWeights(
        variants=names,
        weights=weights,
        upper_bounds=np.array([upper for _, _, upper in buckets], dtype=np.uint64),
        total_weights=np.array(totals, dtype=np.float64),
    )


def product_recommendations(con: duckdb.DuckDBPyConnection, tuning: Tuning) -> str:
    """The SQL of the blended candidates in `con`: a view of RESULT that computes them batch by batch.

    `con` has the stage's inputs as views and every tuning value plus `as_of` as variables. The inputs are read
    here; the rows are computed while the view is read, in (customer_key, recommendation_rank) order (each read
    computes them again).
    """
    weights = variant_weights(tuning)
    catalogue = _load_catalogue(con, tuning, weights)
    customers = _load_customers(con, tuning, weights, catalogue)
    for name in ("blend_customers", "blend_products", "blend_categories", "blend_segments", "blend_affinity"):
        run(con, f"DROP TABLE IF EXISTS {name}")
    texts = _Texts.build(catalogue, customers, weights)
    batches = _batches(customers, catalogue, tuning)

    flags = threading.local()  # each worker's membership flags, reused from batch to batch

    def record_batch(low: int, high: int) -> pa.RecordBatch | None:
        if not hasattr(flags, "cells"):
            flags.cells = np.zeros(_batch_limit(catalogue, tuning) << catalogue.product_bits, dtype=np.uint8)
        rows = _blend_batch(catalogue, customers, weights, tuning, low, high, flags.cells)
        return None if rows is None else texts.batch(rows)

    con.register(RESULT, _BatchStream(record_batch, batches))
    return f"SELECT * FROM {RESULT}"


# ---- loading -------------------------------------------------------------------------------------------------


@dataclass
class Neighbours:
    """A product-side list per source (CSR): candidates and their scores, sources and candidates as numbers."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray

    def degree(self, sources: np.ndarray) -> np.ndarray:
        return self.indptr[sources + 1] - self.indptr[sources]


@dataclass
class Catalogue:
    products: int
    product_bits: int  # a product number takes this many bits of a key
    product_keys: pa.Array  # by product number
    product_ids: pa.Array  # by product number (the evidence names products by id)
    categories: pa.Array  # category names by category number
    segments: pa.Array  # segment names by segment number
    item: dict[str, Neighbours]  # item-to-item strategy -> neighbours of each source product
    category_products: Neighbours  # category -> its top products (data: popularity score)
    category_best: np.ndarray  # per category: the best popularity score among its top products
    popular: Neighbours  # segment -> its popular products (data: raw score)

    @property
    def evidence_offset(self) -> np.ndarray:
        """Per strategy: the evidence text of source number 0 (see _Texts.evidence)."""
        offsets = np.zeros(1 << STRATEGY_BITS, dtype=np.int64)
        offsets[STRATEGY["category_preference"]] = self.products
        offsets[STRATEGY["popular"]] = self.products + len(self.categories)
        offsets[STRATEGY["repurchase"]] = self.products + len(self.categories) + len(self.segments) - 1
        return offsets


@dataclass
class Customers:
    count: int
    customer_keys: pa.Array  # by customer number
    variant: np.ndarray  # variant number per customer
    seeds: dict[str, np.ndarray]  # customer, product, affinity: each customer's seeds, strongest first
    affinity: dict[str, np.ndarray]  # customer, product, bought: every affinity row, by customer and product
    ordered: dict[str, np.ndarray]  # customer, product: products ordered up to as_of (for exclude_purchased)
    categories: dict[str, np.ndarray]  # customer, category, score: the customer's top categories
    segment: np.ndarray  # segment number per customer (-1: none)
    repurchase: dict[str, np.ndarray]  # customer, product, raw_score, orders
    pointers: dict[str, np.ndarray]  # per table above: where each customer's rows start (customers + 1 entries)


def _fetch(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, np.ndarray]:
    return {name: np.asarray(values) for name, values in con.sql(sql).fetchnumpy().items()}


def _neighbours(con: duckdb.DuckDBPyConnection, sql: str, sources: int) -> Neighbours:
    """A CSR list from rows (source, candidate, score) ordered by source, candidate."""
    rows = _fetch(con, sql)
    indptr = np.zeros(sources + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows["source"], minlength=sources), out=indptr[1:])
    return Neighbours(indptr, rows["candidate"].astype(np.int32), rows["score"].astype(np.float64))


def _load_catalogue(con: duckdb.DuckDBPyConnection, tuning: Tuning, weights: VariantWeights) -> Catalogue:
    neighbour_tables = [table for table, _, _ in SEED_STRATEGIES.values()] + ["ease_item_similarity"]
    product_sources = " UNION ".join(
        ["SELECT product_key FROM products", "SELECT product_key FROM customer_product_affinity",
         "SELECT product_key FROM product_popularity", "SELECT product_key FROM product_repurchase_rates"]
        + [f"SELECT product_key_{side} FROM {table}" for table in neighbour_tables for side in (1, 2)]
    )
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE blend_products AS
            WITH available AS (
                -- unknown stock (NULL) counts as in stock
                SELECT DISTINCT product_key FROM products
                WHERE is_active AND (stock_quantity > 0 OR stock_quantity IS NULL)
            )
            SELECT p.product_key,
                   k.product_id,
                   (row_number() OVER (ORDER BY p.product_key) - 1)::INTEGER AS product,
                   a.product_key IS NOT NULL AS available
            FROM ({product_sources}) AS p
            JOIN product_keys AS k USING (product_key)
            LEFT JOIN available AS a USING (product_key)
            WHERE p.product_key IS NOT NULL""",
    )
    run(
        con,
        """CREATE OR REPLACE TEMP TABLE blend_categories AS
           SELECT category, (row_number() OVER (ORDER BY category) - 1)::INTEGER AS category_number
           FROM (SELECT DISTINCT category FROM product_popularity WHERE segment = 'all' AND category IS NOT NULL)""",
    )
    run(
        con,
        """CREATE OR REPLACE TEMP TABLE blend_segments AS
           SELECT segment, (row_number() OVER (ORDER BY segment) - 1)::INTEGER AS segment_number
           FROM (SELECT DISTINCT segment FROM product_popularity WHERE segment IS NOT NULL)""",
    )
    products = con.sql("SELECT count(*) FROM blend_products").fetchall()[0][0]
    numbered = con.sql("SELECT product_key, product_id FROM blend_products ORDER BY product").to_arrow_table()
    categories = con.sql("SELECT category FROM blend_categories ORDER BY category_number").to_arrow_table()
    segments = con.sql("SELECT segment FROM blend_segments ORDER BY segment_number").to_arrow_table()
    active = dict(zip(STRATEGIES, weights.active))

    item: dict[str, Neighbours] = {}
    for strategy, (table, score, rank) in SEED_STRATEGIES.items():
        if active[strategy]:
            item[strategy] = _neighbours(con, _neighbour_sql(table, score, f"n.{rank} <= getvariable('neighbours_per_seed')"), products)
    if active["ease"]:
        item["ease"] = _neighbours(con, _neighbour_sql("ease_item_similarity", "ease_weight", "TRUE"), products)

    category_count = len(categories)
    category_rows = _fetch(
        con,
        """WITH top_products AS (
               SELECT category, product_key, popularity_score,
                      max(popularity_score) OVER (PARTITION BY category) AS best_in_category
               FROM product_popularity
               WHERE segment = 'all' AND category_rank <= getvariable('category_products')
           )
           SELECT k.category_number AS source, p.product AS candidate, t.popularity_score AS score,
                  t.best_in_category
           FROM top_products AS t
           JOIN blend_categories AS k USING (category)
           JOIN blend_products AS p USING (product_key)
           WHERE p.available
           ORDER BY source, candidate""",
    )
    category_best = np.full(category_count, np.nan)
    category_best[category_rows["source"]] = category_rows["best_in_category"]
    indptr = np.zeros(category_count + 1, dtype=np.int64)
    np.cumsum(np.bincount(category_rows["source"], minlength=category_count), out=indptr[1:])
    category_products = Neighbours(indptr, category_rows["candidate"].astype(np.int32), category_rows["score"])

    popular = _neighbours(
        con,
        """SELECT g.segment_number AS source, p.product AS candidate,
                  t.popularity_score + 1e-6 * (getvariable('popular_products') - t.popularity_rank + 1) AS score
           FROM product_popularity AS t
           JOIN blend_segments AS g USING (segment)
           JOIN blend_products AS p USING (product_key)
           WHERE t.popularity_rank <= getvariable('popular_products') AND p.available
           ORDER BY source, candidate""",
        len(segments),
    )
    return Catalogue(
        products=products,
        product_bits=max(1, (products - 1).bit_length()),
        product_keys=numbered["product_key"].combine_chunks(),
        product_ids=numbered["product_id"].combine_chunks(),
        categories=categories["category"].combine_chunks(),
        segments=segments["segment"].combine_chunks(),
        item=item,
        category_products=category_products,
        category_best=category_best,
        popular=popular,
    )


def _neighbour_sql(table: str, score: str, condition: str) -> str:
    return f"""SELECT a.product AS source, b.product AS candidate, n.{score}::DOUBLE AS score
               FROM {table} AS n
               JOIN blend_products AS a ON a.product_key = n.product_key_1
               JOIN blend_products AS b ON b.product_key = n.product_key_2
               WHERE {condition} AND b.available
               ORDER BY source, candidate"""


def _load_customers(
    con: duckdb.DuckDBPyConnection, tuning: Tuning, weights: VariantWeights, catalogue: Catalogue
) -> Customers:
    active = dict(zip(STRATEGIES, weights.active))
    sources = ["customer_product_affinity", "customer_category_preferences", "customer_segments"]
    if active["repurchase"]:
        sources.append("orders")
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE blend_customers AS
            SELECT c.customer_key,
                   (row_number() OVER (ORDER BY c.customer_key) - 1)::INTEGER AS customer,
                   -- the A/B variant hangs on the customer's id, which never changes
                   CAST('0x' || left(md5(getvariable('ab_salt') || ':' || k.customer_id), 8) AS UBIGINT) AS variant_hash
            FROM ({" UNION ".join(f"SELECT customer_key FROM {s}" for s in sources)}) AS c
            JOIN customer_keys AS k USING (customer_key)
            WHERE c.customer_key IS NOT NULL""",
    )
    listed = _fetch(con, "SELECT customer, variant_hash FROM blend_customers ORDER BY customer")
    count = len(listed["customer"])
    customer_keys = con.sql("SELECT customer_key FROM blend_customers ORDER BY customer").to_arrow_table()
    variant = np.searchsorted(weights.upper_bounds, listed["variant_hash"].astype(np.uint64), side="right")

    run(
        con,
        """CREATE OR REPLACE TEMP TABLE blend_affinity AS
           SELECT c.customer, p.product, a.weighted_affinity_score AS affinity,
                  coalesce(a.purchase_count > 0, FALSE) AS bought
           FROM customer_product_affinity AS a
           JOIN blend_customers AS c USING (customer_key)
           JOIN blend_products AS p USING (product_key)""",
    )
    seeds = _fetch(
        con,
        """-- each customer's strongest products drive the item-to-item strategies (numbers are in id order)
           SELECT customer, product, affinity
           FROM blend_affinity
           WHERE affinity > 0
           QUALIFY row_number() OVER (PARTITION BY customer ORDER BY affinity DESC, product)
                   <= getvariable('seeds_per_customer')
           ORDER BY customer, product""",
    )
    affinity = _fetch(con, "SELECT customer, product, bought FROM blend_affinity ORDER BY customer, product")
    ordered = _fetch(
        con,
        """SELECT DISTINCT c.customer, p.product
           FROM orders AS o
           JOIN blend_customers AS c USING (customer_key)
           JOIN blend_products AS p USING (product_key)
           WHERE o.order_timestamp <= getvariable('as_of') AND p.available
           ORDER BY c.customer, p.product""" if tuning.exclude_purchased else
        "SELECT 0::INTEGER AS customer, 0::INTEGER AS product WHERE FALSE",
    )
    categories = _fetch(
        con,
        """SELECT c.customer, k.category_number AS category, p.weighted_category_score AS score
           FROM customer_category_preferences AS p
           JOIN blend_customers AS c USING (customer_key)
           JOIN blend_categories AS k USING (category)
           WHERE p.category_rank <= getvariable('category_top_n')
           ORDER BY c.customer""" if active["category_preference"] else
        "SELECT 0::INTEGER AS customer, 0::INTEGER AS category, 0::DOUBLE AS score WHERE FALSE",
    )
    segment_rows = _fetch(
        con,
        """SELECT c.customer, g.segment_number AS segment
           FROM customer_segments AS s
           JOIN blend_customers AS c USING (customer_key)
           JOIN blend_segments AS g ON g.segment = s.customer_segment""",
    )
    segment = np.full(count, -1, dtype=np.int32)
    segment[segment_rows["customer"]] = segment_rows["segment"]
    repurchase = _fetch(
        con,
        """WITH order_lines AS (
               SELECT customer_key, product_key, order_id, max(order_timestamp) AS ordered_at
               FROM orders
               WHERE order_timestamp <= getvariable('as_of')
               GROUP BY customer_key, product_key, order_id
           ),
           repurchase AS (
               -- each order weighted by its age (half-life repurchase_half_life_days), times repurchase_factor
               SELECT o.customer_key, o.product_key,
                      sum(pow(0.5, date_diff('second', o.ordered_at, getvariable('as_of')) / 86400.0
                                   / getvariable('repurchase_half_life_days'))::DECIMAL(38, 12))::DOUBLE
                          * any_value(r.repurchase_factor) AS raw_score,
                      count(*) AS orders
               FROM order_lines AS o
               JOIN product_repurchase_rates AS r USING (product_key)
               GROUP BY o.customer_key, o.product_key
           )
           SELECT c.customer, p.product, r.raw_score, r.orders
           FROM repurchase AS r
           JOIN blend_customers AS c USING (customer_key)
           JOIN blend_products AS p USING (product_key)
           WHERE p.available
           ORDER BY c.customer, p.product""" if active["repurchase"] else
        "SELECT 0::INTEGER AS customer, 0::INTEGER AS product, 0::DOUBLE AS raw_score, 0::BIGINT AS orders WHERE FALSE",
    )
    tables = {"seeds": seeds, "affinity": affinity, "ordered": ordered, "categories": categories,
              "repurchase": repurchase}
    pointers = {}
    for name, table in tables.items():
        table["customer"] = table["customer"].astype(np.int32)
        pointers[name] = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(np.bincount(table["customer"], minlength=count), out=pointers[name][1:])
    for table in (seeds, affinity, ordered, repurchase):
        table["product"] = table["product"].astype(np.int32)
    return Customers(
        count=count,
        customer_keys=customer_keys["customer_key"].combine_chunks(),
        variant=variant.astype(np.int8),
        seeds=seeds,
        affinity=affinity,
        ordered=ordered,
        categories=categories,
        segment=segment,
        repurchase=repurchase,
        pointers=pointers,
    )


# ---- batches -------------------------------------------------------------------------------------------------


def _batch_limit(catalogue: Catalogue, tuning: Tuning) -> int:
    """The most customers in one batch: batch_customers, within the flag cells and the ranking key's bits."""
    return max(1, min(tuning.batch_customers, 1 << _CUSTOMER_BITS, MAX_BATCH_CELLS >> catalogue.product_bits))


def _batches(customers: Customers, catalogue: Catalogue, tuning: Tuning) -> list[tuple[int, int]]:
    """Ranges of consecutive customers, each within the customer limit and about MAX_BATCH_ROWS expanded rows."""
    count = customers.count
    work = np.zeros(count, dtype=np.float64)
    seeds, affinity = customers.seeds, customers.affinity
    for strategy, neighbours in catalogue.item.items():
        if strategy == "ease":
            bought = affinity["bought"]
            degree = neighbours.degree(affinity["product"][bought])
            work += np.bincount(affinity["customer"][bought], weights=degree, minlength=count)
        else:
            work += np.bincount(seeds["customer"], weights=neighbours.degree(seeds["product"]), minlength=count)
    categories = customers.categories
    work += np.bincount(categories["customer"], weights=catalogue.category_products.degree(categories["category"]),
                        minlength=count)
    has_segment = customers.segment >= 0
    work[has_segment] += catalogue.popular.degree(customers.segment[has_segment])
    work += np.diff(customers.pointers["repurchase"])
    cumulative = np.concatenate([[0.0], np.cumsum(work)])
    limit = _batch_limit(catalogue, tuning)
    ranges, low = [], 0
    while low < count:
        high = int(np.searchsorted(cumulative, cumulative[low] + MAX_BATCH_ROWS, side="right")) - 1
        high = min(max(high, low + 1), low + limit, count)
        ranges.append((low, high))
        low = high
    return ranges


@dataclass
class _Entries:
    """Scored (customer, product, strategy) rows of one batch: contributions of a source product to an
    item-to-item candidate, or a whole candidate of another strategy."""

    key: list[np.ndarray]  # (customer << product_bits | product) << 3 | strategy
    value: list[np.ndarray]  # the contribution, or the candidate's raw score
    source: list[np.ndarray]  # the source product, or the evidence's category / segment / order count

    def add(self, strategy: int, customer: np.ndarray, product: np.ndarray, value: np.ndarray,
            source: np.ndarray, product_bits: int) -> None:
        key = ((customer.astype(np.int64) << product_bits) | product) << STRATEGY_BITS | strategy
        self.key.append(key)
        self.value.append(np.asarray(value, dtype=np.float64))
        self.source.append(np.asarray(source, dtype=np.int32))


def _blend_batch(
    catalogue: Catalogue, customers: Customers, weights: VariantWeights, tuning: Tuning, low: int, high: int,
    flags: np.ndarray,
) -> dict[str, np.ndarray] | None:
    """The output rows of customers low..high-1, in (customer, rank) order, as numbers."""
    bits = catalogue.product_bits
    pointers = customers.pointers

    def rows(table: str) -> dict[str, np.ndarray]:
        start, end = pointers[table][low], pointers[table][high]
        return {name: values[start:end] for name, values in getattr(customers, table).items()}

    affinity = rows("affinity")
    owned = ((affinity["customer"] - low) << bits) | affinity["product"]
    purchased = [owned[affinity["bought"]]]
    if tuning.exclude_purchased:
        ordered = rows("ordered")
        purchased.append(((ordered["customer"] - low) << bits) | ordered["product"])
    flags[owned] = OWNED
    for keys in purchased:
        flags[keys] |= PURCHASED
    try:
        entries = _entries(catalogue, customers, weights.weights[customers.variant[low:high]], tuning, low, high,
                           rows, flags)
    finally:
        flags[owned] = 0
        for keys in purchased:
            flags[keys] = 0
    if not entries.key:
        return None
    return _blend(catalogue, customers, weights, tuning, low, high, entries)


def _entries(catalogue, customers, customer_weights, tuning, low, high, rows, flags) -> _Entries:
    """Every strategy's scored rows for the batch's customers, from available products only and without the
    products a customer bought (when excluded) or, for collaborative, interacted with."""
    bits = catalogue.product_bits
    exclude = PURCHASED if tuning.exclude_purchased else 0
    entries = _Entries([], [], [])

    def used(customer: np.ndarray, strategy: str) -> np.ndarray:
        return customer_weights[customer, STRATEGY[strategy]] > 0  # the customer's variant weighs the strategy

    def allowed(customer: np.ndarray, product: np.ndarray, excluded: int) -> np.ndarray | None:
        if not excluded:
            return None
        return (flags[(customer << bits) | product] & excluded) == 0

    for strategy, neighbours in catalogue.item.items():
        if strategy == "ease":  # EASE item-item weights summed over every product the customer bought
            affinity = rows("affinity")
            bought = affinity["bought"]
            customer, source, weight = affinity["customer"][bought] - low, affinity["product"][bought], None
        else:  # the customer's seeds (in product order, so that each candidate's contributions are too)
            seeds = rows("seeds")
            customer, source, weight = seeds["customer"] - low, seeds["product"], seeds["affinity"]
        keep = used(customer, strategy)
        if not keep.all():
            customer, source = customer[keep], source[keep]
            weight = None if weight is None else weight[keep]
        which, position = _expand(neighbours, source)
        candidate = neighbours.indices[position]
        candidate_customer = customer[which]
        # collaborative: never a product the customer already interacted with
        keep = allowed(candidate_customer, candidate, exclude | (OWNED if strategy == "collaborative" else 0))
        if keep is not None:
            which, position, candidate, candidate_customer = which[keep], position[keep], candidate[keep], \
                candidate_customer[keep]
        value = neighbours.data[position] if weight is None else weight[which] * neighbours.data[position]
        entries.add(STRATEGY[strategy], candidate_customer, candidate, value, source[which], bits)

    if customer_weights[:, STRATEGY["category_preference"]].max(initial=0) > 0:
        # the most popular available products of the customer's top categories
        categories = rows("categories")
        customer = categories["customer"] - low
        keep = used(customer, "category_preference")
        customer, category, score = customer[keep], categories["category"][keep], categories["score"][keep]
        which, position = _expand(catalogue.category_products, category)
        raw = score[which] * catalogue.category_products.data[position] / catalogue.category_best[category[which]]
        _add_candidates(entries, "category_preference", customer[which], catalogue.category_products.indices[position],
                        raw, category[which], allowed, exclude, bits)

    if customer_weights[:, STRATEGY["repurchase"]].max(initial=0) > 0:
        repurchase = rows("repurchase")
        customer = repurchase["customer"] - low
        keep = used(customer, "repurchase")
        _add_candidates(entries, "repurchase", customer[keep], repurchase["product"][keep],
                        repurchase["raw_score"][keep], repurchase["orders"][keep], allowed, exclude, bits)

    if customer_weights[:, STRATEGY["popular"]].max(initial=0) > 0:
        # cold start and fill: the customer's segment's popular products
        segment = customers.segment[low:high]
        customer = np.flatnonzero((segment >= 0) & used(np.arange(high - low), "popular")).astype(np.int32)
        which, position = _expand(catalogue.popular, segment[customer])
        _add_candidates(entries, "popular", customer[which], catalogue.popular.indices[position],
                        catalogue.popular.data[position], segment[customer][which], allowed, exclude, bits)
    return entries


def _add_candidates(entries, strategy, customer, product, raw, source, allowed, exclude, bits) -> None:
    """Whole candidates with a raw score > 0 that the customer may get."""
    keep = raw > 0
    permitted = allowed(customer, product, exclude)
    if permitted is not None:
        keep &= permitted
    entries.add(STRATEGY[strategy], customer[keep], product[keep], raw[keep], source[keep], bits)


def _blend(catalogue, customers, weights, tuning, low, high, entries: _Entries) -> dict[str, np.ndarray] | None:
    """Sum, normalise, weight and blend the batch's rows, rank them per customer and list the kept ones' evidence."""
    bits = catalogue.product_bits
    variant = customers.variant[low:high]
    customer_weights = weights.weights[variant]
    keys = np.concatenate(entries.key)
    value = np.concatenate(entries.value)
    source = np.concatenate(entries.source)
    if not len(keys):
        return None

    # one sort groups the rows per (customer, product, strategy), a strategy's sources in product order
    order, start, group_key = _group(keys)
    count = np.diff(np.append(start, len(order)))
    strategy = (group_key & ((1 << STRATEGY_BITS) - 1)).astype(np.int8)
    pair = group_key >> STRATEGY_BITS
    first = order[start]
    raw = value[first]
    item = ITEM_MASK[strategy]
    if item.any():
        # item-to-item: the sum of the contributions over DECIMAL(38, 12), exactly
        summed = _units_to_double(np.add.reduceat(_to_units(value)[order], start))
        raw = np.where(item, summed, raw)
    eligible = np.flatnonzero(raw > 0)
    if len(eligible) < len(raw):
        start, count, strategy, pair, first, raw = (
            start[eligible], count[eligible], strategy[eligible], pair[eligible], first[eligible], raw[eligible])
    customer = (pair >> bits).astype(np.int64)

    # each strategy's scores divided by the customer's best in it, times the variant's weight
    cell = customer * len(STRATEGIES) + strategy
    best = np.full((high - low) * len(STRATEGIES), -np.inf)
    np.maximum.at(best, cell, raw)
    contribution = customer_weights.ravel()[cell] * raw / best[cell]
    # strength: the contribution rounded to 1e-9, then the earlier strategy, as one integer
    strength = _half_away(contribution * 1e9).astype(np.int64) * 16 + (14 - strategy)

    # blend per (customer, product): the strategies of a pair are consecutive
    pair_start = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    pair_count = np.diff(np.append(pair_start, len(pair)))
    blended = _units_to_double(np.add.reduceat(_to_units(contribution), pair_start))
    strongest_strength = np.maximum.reduceat(strength, pair_start)
    strongest = np.flatnonzero(strength == np.repeat(strongest_strength, pair_count))
    strategy_bits = np.bitwise_or.reduceat(np.left_shift(1, strategy, dtype=np.int16), pair_start)
    pair_customer = customer[pair_start]
    score = _round_to_units(blended / weights.total_weights[variant[pair_customer]], 10**9)

    # rank per customer by rounded score desc, then product id (a customer's pairs are in product order)
    customer_start = np.flatnonzero(np.r_[True, pair_customer[1:] != pair_customer[:-1]])
    first_pair = np.zeros(high - low, dtype=np.int64)
    first_pair[pair_customer[customer_start]] = customer_start
    relative = np.arange(len(pair_customer)) - first_pair[pair_customer]
    ranking = np.sort(
        (pair_customer.astype(np.uint64) << np.uint64(_SCORE_BITS + _RELATIVE_BITS))
        | (((1 << _SCORE_BITS) - 1 - score).astype(np.uint64) << np.uint64(_RELATIVE_BITS))
        | relative.astype(np.uint64)
    )
    ranked_customer = (ranking >> np.uint64(_SCORE_BITS + _RELATIVE_BITS)).astype(np.int64)
    ranked = first_pair[ranked_customer] + (ranking & np.uint64((1 << _RELATIVE_BITS) - 1)).astype(np.int64)
    rank = np.arange(len(ranked)) - _run_starts(ranked_customer) + 1
    kept = rank <= tuning.candidates_per_customer
    ranked, rank, ranked_customer = ranked[kept], rank[kept], ranked_customer[kept]

    group = strongest[ranked]
    kind = strategy[group]
    offsets, evidence = _evidence(catalogue, tuning, kind, start[group], count[group], first[group], order, value,
                                  source)
    return {
        "low": low,
        "high": high,
        "customer": ranked_customer.astype(np.int32),
        "product": (pair[pair_start[ranked]] & ((1 << bits) - 1)).astype(np.int32),
        "strategy": kind,
        "score": score[ranked] / 1e9,
        "bits": strategy_bits[ranked].astype(np.int8),
        "evidence_offsets": offsets,
        "evidence_values": evidence,
        "rank": rank,
        "variant": variant[ranked_customer],
    }


def _run_starts(values: np.ndarray) -> np.ndarray:
    """For values in runs of equal values: the index where each value's run starts."""
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return np.repeat(starts, np.diff(np.append(starts, len(values))))


def _evidence(catalogue, tuning, kind, member_start, member_count, first, order, value, source):
    """Each row's evidence as numbers in the evidence texts (_Texts): the strongest strategy's source products
    (contribution desc, then id; at most seeds_per_customer), else its category, segment or order count."""
    rows = len(kind)
    item = ITEM_MASK[kind]
    single = source[first].astype(np.int64) + catalogue.evidence_offset[kind]
    counts = np.where(item, np.minimum(member_count, tuning.seeds_per_customer), 1)
    offsets = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    values = np.empty(offsets[-1], dtype=np.int64)
    values[offsets[:-1]] = single
    several = np.flatnonzero(item & (member_count > 1))
    sizes = member_count[several]
    for size in np.unique(sizes):
        # the rows with `size` sources: their contributions sorted desc; ties keep the product order
        these = several[sizes == size]
        members = order[member_start[these][:, None] + np.arange(size)]
        by_contribution = np.argsort(-value[members], axis=1, kind="stable")[:, : tuning.seeds_per_customer]
        listed = np.take_along_axis(source[members], by_contribution, axis=1)
        values[offsets[these][:, None] + np.arange(listed.shape[1])] = listed
    return offsets, values


# ---- output --------------------------------------------------------------------------------------------------


SCHEMA = pa.schema([
    ("customer_key", pa.int32()),
    ("product_key", pa.int32()),
    ("recommendation_type", pa.dictionary(pa.int8(), pa.string())),
    ("recommendation_score", pa.float64()),
    ("strategies", pa.dictionary(pa.int8(), pa.string())),
    ("evidence", pa.string()),
    ("recommendation_rank", pa.int64()),
    ("variant", pa.dictionary(pa.int8(), pa.string())),
])


@dataclass
class _Texts:
    """The texts the output rows refer to by number."""

    customer_keys: pa.Array
    product_keys: pa.Array
    strategies: pa.Array  # by strategy number
    strategy_sets: pa.Array  # by set of strategy bits: the names, sorted, comma-separated
    variants: pa.Array
    evidence: pa.Array  # product ids, then category:, popular: and bought: texts (Catalogue.evidence_offset)

    @classmethod
    def build(cls, catalogue: Catalogue, customers: Customers, weights: VariantWeights) -> _Texts:
        sets = [",".join(sorted(s for k, s in enumerate(STRATEGIES) if bits >> k & 1))
                for bits in range(1 << len(STRATEGIES))]
        most_orders = int(customers.repurchase["orders"].max(initial=1))
        product_ids = catalogue.product_ids.cast(pa.string())
        evidence = [
            product_ids,
            pc.binary_join_element_wise("category:", catalogue.categories.cast(pa.string()), ""),
            pc.binary_join_element_wise("popular:", catalogue.segments.cast(pa.string()), ""),
            pa.array([f"bought:{n}" for n in range(1, most_orders + 1)], type=pa.string()),
        ]
        return cls(
            customer_keys=customers.customer_keys.cast(pa.int32()),
            product_keys=catalogue.product_keys.cast(pa.int32()),
            strategies=pa.array(STRATEGIES, type=pa.string()),
            strategy_sets=pa.array(sets, type=pa.string()),
            variants=pa.array(weights.variants, type=pa.string()),
            evidence=pa.concat_arrays(evidence),
        )

    def batch(self, rows: dict[str, np.ndarray]) -> pa.RecordBatch:
        evidence = pa.ListArray.from_arrays(
            pa.array(rows["evidence_offsets"].astype(np.int32)), self.evidence.take(pa.array(rows["evidence_values"]))
        )
        customers = self.customer_keys.slice(rows["low"], rows["high"] - rows["low"])
        return pa.record_batch([
            customers.take(pa.array(rows["customer"])),
            self.product_keys.take(pa.array(rows["product"])),
            pa.DictionaryArray.from_arrays(pa.array(rows["strategy"]), self.strategies),
            pa.array(rows["score"], type=pa.float64()),
            pa.DictionaryArray.from_arrays(pa.array(rows["bits"]), self.strategy_sets),
            pc.binary_join(evidence, ","),
            pa.array(rows["rank"], type=pa.int64()),
            pa.DictionaryArray.from_arrays(pa.array(rows["variant"]), self.variants),
        ], schema=SCHEMA)


class _BatchStream:
    """An Arrow stream (the PyCapsule interface) that computes its record batches anew for every read: WORKERS
    threads compute the next batches (numpy releases the GIL) while the reader consumes them in order."""

    def __init__(self, compute: Callable[[int, int], pa.RecordBatch | None], ranges: list[tuple[int, int]]):
        self.compute = compute
        self.ranges = ranges

    def __arrow_c_stream__(self, requested_schema=None):
        reader = pa.RecordBatchReader.from_batches(SCHEMA, self._batches())
        return reader.__arrow_c_stream__(requested_schema)

    def _batches(self) -> Iterator[pa.RecordBatch]:
        pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="blend")
        pending: deque = deque()
        ranges = iter(self.ranges)
        try:
            while True:
                while len(pending) < 2 * WORKERS and (batch := next(ranges, None)) is not None:
                    pending.append(pool.submit(self.compute, *batch))
                if not pending:
                    return
                batch = pending.popleft().result()
                if batch is not None:
                    yield batch
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)


# ---- integer helpers -----------------------------------------------------------------------------------------


def _expand(neighbours: Neighbours, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each entry of the sources' neighbour lists: which source it belongs to and its position in the CSR."""
    start = neighbours.indptr[sources]
    count = neighbours.indptr[sources + 1] - start
    which = np.repeat(np.arange(len(sources), dtype=np.int32), count)
    position = np.repeat(start - np.cumsum(count) + count, count) + np.arange(int(count.sum()))
    return which, position


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The order that groups equal keys (key order, then index), where each group starts, and its key."""
    n = len(keys)
    shift = max(1, (n - 1).bit_length())
    assert int(keys.max()).bit_length() + shift <= 63, "batch too large for the packed sort"
    packed = np.sort((keys << shift) | np.arange(n, dtype=np.int64))
    order = packed & ((1 << shift) - 1)
    packed >>= shift
    start = np.flatnonzero(np.r_[True, packed[1:] != packed[:-1]])
    return order, start, packed[start]


def _half_away(x: np.ndarray) -> np.ndarray:
    """C's round(): to the nearest integer, halves away from zero (DuckDB's round(DOUBLE) and DOUBLE to DECIMAL)."""
    if len(x) and x.min() >= 0:
        rounded = np.floor(x)
        rounded += (x - rounded) >= 0.5
        return rounded
    magnitude = np.abs(x)
    rounded = np.floor(magnitude)
    rounded += (magnitude - rounded) >= 0.5
    return np.copysign(rounded, x)


def _half_away_scalar(x: float) -> int:
    rounded = math.floor(abs(x))
    rounded += (abs(x) - rounded) >= 0.5
    return int(math.copysign(rounded, x))


def _to_units(x: np.ndarray) -> np.ndarray:
    """x::DECIMAL(38, 12) as integers of 1e-12."""
    return _half_away(x * 1e12).astype(np.int64)


def _units_to_double(units: np.ndarray) -> np.ndarray:
    """A DECIMAL(38, 12) given in integers of 1e-12 as DOUBLE: the double nearest to its exact value."""
    result = units / 1e12  # correctly rounded while the integer has at most 53 bits
    large = np.flatnonzero(np.abs(units) >= 1 << 53)
    if not len(large):
        return result
    # whole part (exact, |x| >= 2**13) plus the fraction rounded once: the sum rounds to the nearest double
    # unless it is within the fraction's error (2**-54) of a midpoint between doubles; those are divided exactly
    whole, fraction = np.divmod(units[large], UNITS)
    whole = whole.astype(np.float64)
    fraction = fraction / 1e12
    total = whole + fraction
    error = np.abs((whole - total) + fraction)  # exact: |whole + fraction - total| (Fast2Sum, |whole| >= fraction)
    spacing = np.spacing(np.abs(total))
    near = np.minimum(np.abs(spacing / 2 - error), np.abs(spacing / 4 - error)) <= 2.0**-52
    for i in np.flatnonzero(near):
        total[i] = int(units[large[i]]) / UNITS
    result[large] = total
    return result


def _round_to_units(x: np.ndarray, scale: int) -> np.ndarray:
    """DuckDB's round(x, digits) for x >= 0 as integers of 1/scale: the exact decimal value, halves up."""
    scaled = x * float(scale)
    rounded = np.floor(scaled)
    fraction = scaled - rounded
    up = fraction > 0.5
    for i in np.flatnonzero(fraction == 0.5):  # the product was rounded onto a half: decide on the exact value
        up[i] = Fraction(float(x[i])) * scale >= int(rounded[i]) + Fraction(1, 2)
    return rounded.astype(np.int64) + up
