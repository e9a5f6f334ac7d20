"""The blend (product_recommendations) over integer ids, with the rows of `sql/product_recommendations.sql`.

Method. DuckDB numbers the customer and product ids densely in id order (so integer order is the SQL's text
order) and loads every input once as numpy arrays: the per-customer inputs sorted by customer, the product-side
tables as neighbour lists (CSR, rows = source product) without unavailable candidates. Customers are then blended
in batches of consecutive numbers, each bounded in customers and in expanded candidate rows, so memory does not
grow with the catalogue of customers:
- item-to-item: each seed's (or, for EASE, each bought product's) neighbour list is expanded into one
  contribution per (customer, product, source); one sort of packed integer keys groups them per (customer,
  product) and the contributions are summed as integers of 1e-12, each rounded first, which is exactly the SQL's
  sum over DECIMAL(38, 12);
- category, popular and "buy it again" candidates come from small per-category/per-segment lists and per-customer
  rows (their per-row arithmetic is DuckDB's, done in SQL);
- each candidate is divided by its customer's best eligible score in its strategy, weighted by the customer's A/B
  variant, and the strategies are summed per (customer, product) with a second packed sort; one sort of
  (customer, rounded score, product) ranks and cuts to `candidates_per_customer`;
- evidence lists the sources of the kept item-to-item rows (contribution desc, then source id), and the ids are
  mapped back to text only for those rows.
Each batch is appended to a DuckDB temporary table in (customer_id, recommendation_rank) order. DuckDB's own
rounding is reproduced where it matters: DOUBLE to DECIMAL rounds the scaled double half away from zero, DECIMAL
to DOUBLE and round(x, 9) are correctly rounded from the exact decimal value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recopipeline.lib.tuning import STRATEGIES, Tuning
from recopipeline.lib.warehouse import run

RESULT_TABLE = "product_recommendations_blend"
SEED_STRATEGIES = {  # strategy -> (neighbour table, score column, rank column), scored from the customer's seeds
    "affinity_similar": ("product_similarity", "attribute_similarity_score", "similarity_rank"),
    "collaborative": ("collaborative_item_similarity", "cf_similarity", "cf_rank"),
    "complementary": ("complementary_products", "complementary_score", "complementary_rank"),
}
ITEM_STRATEGIES = (*SEED_STRATEGIES, "ease")  # their evidence lists source products
STRATEGY = {name: index for index, name in enumerate(STRATEGIES)}  # a strategy's priority is its index + 1
UNITS = 10**12  # DECIMAL(38, 12): sums are exact in units of 1e-12
MAX_BATCH_ROWS = 1 << 22  # expanded candidate rows per batch (about 200 MB of numpy arrays)
MAX_BATCH_CELLS = 1 << 27  # customers x products per batch (the membership flags, one byte per cell)
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
    """Blend every strategy's candidates into the temporary table RESULT_TABLE; returns the SQL that reads it.

    `con` has the stage's inputs as views and every tuning value plus `as_of` as variables. Rows are inserted in
    (customer_id, recommendation_rank) order.
    """
    weights = variant_weights(tuning)
    catalogue = _load_catalogue(con, tuning, weights)
    customers = _load_customers(con, tuning, weights, catalogue)
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE {RESULT_TABLE} (
                customer_id VARCHAR, product_id VARCHAR, recommendation_type VARCHAR, recommendation_score DOUBLE,
                strategies VARCHAR, evidence VARCHAR, recommendation_rank BIGINT, variant VARCHAR)""",
    )
    texts = _Texts.build(catalogue, customers, weights)
    flags = np.zeros(_batch_limit(catalogue, tuning) * catalogue.products, dtype=np.uint8)
    for low, high in _batches(customers, catalogue, tuning):
        rows = _blend_batch(catalogue, customers, weights, tuning, low, high, flags)
        if rows is not None:
            con.register("blend_batch", texts.table(rows))
            run(con, f"INSERT INTO {RESULT_TABLE} SELECT * FROM blend_batch")
            con.unregister("blend_batch")
    for name in ("blend_customers", "blend_products", "blend_categories", "blend_segments"):
        run(con, f"DROP TABLE IF EXISTS {name}")
    return f"SELECT * FROM {RESULT_TABLE}"


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
    product_ids: pa.Array  # by product number
    categories: pa.Array  # category names by category number
    segments: pa.Array  # segment names by segment number
    item: dict[str, Neighbours]  # item-to-item strategy -> neighbours of each source product
    category_products: Neighbours  # category -> its top products (data: popularity score)
    category_best: np.ndarray  # per category: the best popularity score among its top products
    popular: Neighbours  # segment -> its popular products (data: raw score)


@dataclass
class Customers:
    count: int
    customer_ids: pa.Array
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
        ["SELECT product_id FROM products", "SELECT product_id FROM product_popularity",
         "SELECT product_id FROM product_repurchase_rates"]
        + [f"SELECT product_id_{side} FROM {table}" for table in neighbour_tables for side in (1, 2)]
    )
    run(
        con,
        f"""CREATE OR REPLACE TEMP TABLE blend_products AS
            WITH available AS (
                -- unknown stock (NULL) counts as in stock
                SELECT DISTINCT product_id FROM products
                WHERE is_active AND (stock_quantity > 0 OR stock_quantity IS NULL)
            )
            SELECT p.product_id,
                   (row_number() OVER (ORDER BY p.product_id) - 1)::INTEGER AS product,
                   a.product_id IS NOT NULL AS available
            FROM ({product_sources}) AS p
            LEFT JOIN available AS a USING (product_id)
            WHERE p.product_id IS NOT NULL""",
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
    product_ids = con.sql("SELECT product_id FROM blend_products ORDER BY product").to_arrow_table()["product_id"]
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
               SELECT category, product_id, popularity_score,
                      max(popularity_score) OVER (PARTITION BY category) AS best_in_category
               FROM product_popularity
               WHERE segment = 'all' AND category_rank <= getvariable('category_products')
           )
           SELECT k.category_number AS source, p.product AS candidate, t.popularity_score AS score,
                  t.best_in_category
           FROM top_products AS t
           JOIN blend_categories AS k USING (category)
           JOIN blend_products AS p USING (product_id)
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
           JOIN blend_products AS p USING (product_id)
           WHERE t.popularity_rank <= getvariable('popular_products') AND p.available
           ORDER BY source, candidate""",
        len(segments),
    )
    return Catalogue(
        products=products,
        product_ids=product_ids.combine_chunks(),
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
               JOIN blend_products AS a ON a.product_id = n.product_id_1
               JOIN blend_products AS b ON b.product_id = n.product_id_2
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
            SELECT customer_id,
                   (row_number() OVER (ORDER BY customer_id) - 1)::INTEGER AS customer,
                   CAST('0x' || left(md5(getvariable('ab_salt') || ':' || customer_id), 8) AS UBIGINT) AS variant_hash
            FROM ({" UNION ".join(f"SELECT customer_id FROM {s}" for s in sources)})
            WHERE customer_id IS NOT NULL""",
    )
    listed = _fetch(con, "SELECT customer, variant_hash FROM blend_customers ORDER BY customer")
    count = len(listed["customer"])
    customer_ids = con.sql("SELECT customer_id FROM blend_customers ORDER BY customer").to_arrow_table()
    variant = np.searchsorted(weights.upper_bounds, listed["variant_hash"].astype(np.uint64), side="right")

    seeds = _fetch(
        con,
        """WITH seeds AS (
               -- each customer's strongest products drive the item-to-item strategies
               SELECT customer_id, product_id, weighted_affinity_score AS affinity
               FROM customer_product_affinity
               WHERE weighted_affinity_score > 0
               QUALIFY row_number() OVER (
                   PARTITION BY customer_id ORDER BY weighted_affinity_score DESC, product_id
               ) <= getvariable('seeds_per_customer')
           )
           SELECT c.customer, p.product, s.affinity
           FROM seeds AS s
           JOIN blend_customers AS c USING (customer_id)
           JOIN blend_products AS p USING (product_id)
           ORDER BY c.customer, s.affinity DESC, p.product""",
    )
    affinity = _fetch(
        con,
        """SELECT c.customer, p.product, coalesce(a.purchase_count > 0, FALSE) AS bought
           FROM customer_product_affinity AS a
           JOIN blend_customers AS c USING (customer_id)
           JOIN blend_products AS p USING (product_id)
           ORDER BY c.customer, p.product""",
    )
    ordered = _fetch(
        con,
        """SELECT DISTINCT c.customer, p.product
           FROM orders AS o
           JOIN blend_customers AS c USING (customer_id)
           JOIN blend_products AS p USING (product_id)
           WHERE o.order_timestamp <= getvariable('as_of') AND p.available
           ORDER BY c.customer, p.product""" if tuning.exclude_purchased else
        "SELECT 0::INTEGER AS customer, 0::INTEGER AS product WHERE FALSE",
    )
    categories = _fetch(
        con,
        """SELECT c.customer, k.category_number AS category, p.weighted_category_score AS score
           FROM customer_category_preferences AS p
           JOIN blend_customers AS c USING (customer_id)
           JOIN blend_categories AS k USING (category)
           WHERE p.category_rank <= getvariable('category_top_n')
           ORDER BY c.customer""" if active["category_preference"] else
        "SELECT 0::INTEGER AS customer, 0::INTEGER AS category, 0::DOUBLE AS score WHERE FALSE",
    )
    segment_rows = _fetch(
        con,
        """SELECT c.customer, g.segment_number AS segment
           FROM customer_segments AS s
           JOIN blend_customers AS c USING (customer_id)
           JOIN blend_segments AS g ON g.segment = s.customer_segment""",
    )
    segment = np.full(count, -1, dtype=np.int32)
    segment[segment_rows["customer"]] = segment_rows["segment"]
    repurchase = _fetch(
        con,
        """WITH order_lines AS (
               SELECT customer_id, product_id, order_id, max(order_timestamp) AS ordered_at
               FROM orders
               WHERE order_timestamp <= getvariable('as_of')
               GROUP BY customer_id, product_id, order_id
           ),
           repurchase AS (
               -- each order weighted by its age (half-life repurchase_half_life_days), times repurchase_factor
               SELECT o.customer_id, o.product_id,
                      sum(pow(0.5, date_diff('second', o.ordered_at, getvariable('as_of')) / 86400.0
                                   / getvariable('repurchase_half_life_days'))::DECIMAL(38, 12))::DOUBLE
                          * any_value(r.repurchase_factor) AS raw_score,
                      count(*) AS orders
               FROM order_lines AS o
               JOIN product_repurchase_rates AS r USING (product_id)
               GROUP BY o.customer_id, o.product_id
           )
           SELECT c.customer, p.product, r.raw_score, r.orders
           FROM repurchase AS r
           JOIN blend_customers AS c USING (customer_id)
           JOIN blend_products AS p USING (product_id)
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
        customer_ids=customer_ids["customer_id"].combine_chunks(),
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
    return max(1, min(tuning.batch_customers, 1 << _CUSTOMER_BITS, MAX_BATCH_CELLS // max(catalogue.products, 1)))


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
class _Candidates:
    """One strategy's candidates in a batch, by customer (local number) and product."""

    customer: np.ndarray
    product: np.ndarray
    raw: np.ndarray
    reference: np.ndarray  # item strategies: the group of its contributions; else the evidence's number


@dataclass
class _Contributions:
    """An item strategy's expanded contributions in a batch, grouped per (customer, product)."""

    order: np.ndarray  # contribution indices, group by group
    group_start: np.ndarray
    group_count: np.ndarray
    contribution: np.ndarray
    source: np.ndarray


def _blend_batch(
    catalogue: Catalogue, customers: Customers, weights: VariantWeights, tuning: Tuning, low: int, high: int,
    flags: np.ndarray,
) -> dict[str, np.ndarray] | None:
    """The output rows of customers low..high-1, in (customer, rank) order, as numbers."""
    products = catalogue.products
    pointers = customers.pointers
    variant = customers.variant[low:high]
    customer_weights = weights.weights[variant]  # local customer x strategy

    def rows(table: str) -> dict[str, np.ndarray]:
        start, end = pointers[table][low], pointers[table][high]
        return {name: values[start:end] for name, values in getattr(customers, table).items()}

    affinity = rows("affinity")
    owned = (affinity["customer"] - low).astype(np.int64) * products + affinity["product"]
    purchased = [owned[affinity["bought"]]]
    if tuning.exclude_purchased:
        ordered = rows("ordered")
        purchased.append((ordered["customer"] - low).astype(np.int64) * products + ordered["product"])
    flags[owned] = OWNED
    for keys in purchased:
        flags[keys] |= PURCHASED
    try:
        candidates, contributions = _candidates(
            catalogue, customers, customer_weights, tuning, low, high, rows, flags
        )
    finally:
        flags[owned] = 0
        for keys in purchased:
            flags[keys] = 0
    if not candidates:
        return None
    return _rank(catalogue, weights, tuning, low, high, variant, customer_weights, candidates, contributions)


def _candidates(catalogue, customers, customer_weights, tuning, low, high, rows, flags):
    """Every eligible candidate per strategy (available, raw score > 0, not purchased when excluded)."""
    products = catalogue.products
    exclude = tuning.exclude_purchased
    candidates: dict[str, _Candidates] = {}
    contributions: dict[str, _Contributions] = {}

    for strategy, neighbours in catalogue.item.items():
        k = STRATEGY[strategy]
        if strategy == "ease":
            # EASE item-item weights summed over every product the customer bought
            affinity = rows("affinity")
            bought = affinity["bought"]
            source_customer, source_product = affinity["customer"][bought] - low, affinity["product"][bought]
            source_weight = None
        else:
            seeds = rows("seeds")
            source_customer, source_product = seeds["customer"] - low, seeds["product"]
            source_weight = seeds["affinity"]
        used = customer_weights[source_customer, k] > 0
        if not used.all():
            source_customer, source_product = source_customer[used], source_product[used]
            source_weight = None if source_weight is None else source_weight[used]
        source, position = _expand(neighbours, source_product)
        if not len(source):
            continue
        customer = source_customer[source]
        product = neighbours.indices[position]
        key = customer.astype(np.int64) * products + product
        excluded = PURCHASED if exclude else 0
        if strategy == "collaborative":  # never a product the customer already interacted with
            excluded |= OWNED
        if excluded:
            keep = (flags[key] & excluded) == 0
            source, position, key = source[keep], position[keep], key[keep]
        contribution = neighbours.data[position]
        if source_weight is not None:
            contribution = source_weight[source] * contribution
        order, group_start, group_key = _group(key, high - low, products)
        sums = np.add.reduceat(_to_units(contribution)[order], group_start) if len(order) else np.zeros(0, np.int64)
        group_count = np.diff(np.append(group_start, len(order)))
        positive = np.flatnonzero(sums > 0)
        candidates[strategy] = _Candidates(
            customer=(group_key[positive] // products).astype(np.int32),
            product=(group_key[positive] % products).astype(np.int32),
            raw=_units_to_double(sums[positive]),
            reference=positive,
        )
        contributions[strategy] = _Contributions(
            order=order, group_start=group_start, group_count=group_count, contribution=contribution,
            source=source_product[source],
        )

    if customer_weights[:, STRATEGY["category_preference"]].max(initial=0) > 0:
        # the most popular available products of the customer's top categories
        categories = rows("categories")
        customer = categories["customer"] - low
        used = customer_weights[customer, STRATEGY["category_preference"]] > 0
        category, score, customer = categories["category"][used], categories["score"][used], customer[used]
        source, position = _expand(catalogue.category_products, category)
        raw = score[source] * catalogue.category_products.data[position] / catalogue.category_best[category[source]]
        candidates["category_preference"] = _eligible(
            customer[source], catalogue.category_products.indices[position], raw, category[source], flags,
            products, exclude,
        )

    if customer_weights[:, STRATEGY["repurchase"]].max(initial=0) > 0:
        repurchase = rows("repurchase")
        customer = repurchase["customer"] - low
        used = customer_weights[customer, STRATEGY["repurchase"]] > 0
        candidates["repurchase"] = _eligible(
            customer[used], repurchase["product"][used], repurchase["raw_score"][used],
            repurchase["orders"][used], flags, products, exclude,
        )

    if customer_weights[:, STRATEGY["popular"]].max(initial=0) > 0:
        # cold start and fill: the customer's segment's popular products
        segment = customers.segment[low:high]
        customer = np.flatnonzero((segment >= 0) & (customer_weights[:, STRATEGY["popular"]] > 0))
        source, position = _expand(catalogue.popular, segment[customer])
        candidates["popular"] = _eligible(
            customer[source], catalogue.popular.indices[position], catalogue.popular.data[position],
            segment[customer][source], flags, products, exclude,
        )
    return {s: c for s, c in candidates.items() if len(c.raw)}, contributions


def _eligible(customer, product, raw, reference, flags, products, exclude) -> _Candidates:
    """The candidates with a raw score > 0 that the customer has not bought (when excluded)."""
    keep = raw > 0
    if exclude:
        keep &= (flags[customer.astype(np.int64) * products + product] & PURCHASED) == 0
    return _Candidates(customer[keep].astype(np.int32), product[keep].astype(np.int32), raw[keep], reference[keep])


def _rank(catalogue, weights, tuning, low, high, variant, customer_weights, candidates, contributions):
    """Normalise, weight and blend the candidates, rank them per customer and list each kept row's evidence."""
    products = catalogue.products
    parts = []
    for strategy, c in candidates.items():
        k = STRATEGY[strategy]
        # the customer's best score in this strategy (the candidates are by customer)
        start = np.flatnonzero(np.r_[True, c.customer[1:] != c.customer[:-1]])
        best = np.maximum.reduceat(c.raw, start)
        best = np.repeat(best, np.diff(np.append(start, len(c.raw))))
        contribution = customer_weights[c.customer, k] * c.raw / best
        # strength: the contribution rounded to 1e-9, then the earlier strategy, as one integer
        strength = _half_away(contribution * 1e9).astype(np.int64) * 16 + (15 - (k + 1))
        parts.append((k, c, _to_units(contribution), strength))

    customer = np.concatenate([c.customer for _, c, _, _ in parts])
    product = np.concatenate([c.product for _, c, _, _ in parts])
    strategy = np.concatenate([np.full(len(c.raw), k, dtype=np.int8) for k, c, _, _ in parts])
    reference = np.concatenate([c.reference for _, c, _, _ in parts])
    units = np.concatenate([u for _, _, u, _ in parts])
    strength = np.concatenate([s for _, _, _, s in parts])

    order, start, key = _group(customer.astype(np.int64) * products + product, high - low, products)
    blended = _units_to_double(np.add.reduceat(units[order], start))
    strongest_strength = np.maximum.reduceat(strength[order], start)
    bits = np.bitwise_or.reduceat((np.int16(1) << strategy.astype(np.int16))[order], start)
    count = np.diff(np.append(start, len(order)))
    strongest = order[np.flatnonzero(strength[order] == np.repeat(strongest_strength, count))]
    group_customer = (key // products).astype(np.int64)
    score = _round_to_units(blended / weights.total_weights[variant[group_customer]], 10**9)

    # rank: per customer by rounded score desc, then product id (groups of a customer are in product order)
    first = np.flatnonzero(np.r_[True, group_customer[1:] != group_customer[:-1]])
    first_group = np.zeros(high - low, dtype=np.int64)
    first_group[group_customer[first]] = first
    relative = np.arange(len(key)) - np.repeat(first, np.diff(np.append(first, len(key))))
    assert relative.max(initial=0) < (1 << _RELATIVE_BITS) and high - low <= (1 << _CUSTOMER_BITS)
    ranking = np.sort(
        (group_customer.astype(np.uint64) << np.uint64(_SCORE_BITS + _RELATIVE_BITS))
        | (((1 << _SCORE_BITS) - 1 - score).astype(np.uint64) << np.uint64(_RELATIVE_BITS))
        | relative.astype(np.uint64)
    )
    ranked_customer = (ranking >> np.uint64(_SCORE_BITS + _RELATIVE_BITS)).astype(np.int64)
    group = first_group[ranked_customer] + (ranking & np.uint64((1 << _RELATIVE_BITS) - 1)).astype(np.int64)
    first = np.flatnonzero(np.r_[True, ranked_customer[1:] != ranked_customer[:-1]])
    rank = np.arange(len(group)) - np.repeat(first, np.diff(np.append(first, len(group)))) + 1
    kept = rank <= tuning.candidates_per_customer
    group, rank, ranked_customer = group[kept], rank[kept], ranked_customer[kept]

    chosen = strongest[group]
    kind = strategy[chosen]
    evidence = _evidence(catalogue, tuning, kind, reference[chosen], contributions)
    return {
        "customer": low + ranked_customer,
        "product": key[group] % products,
        "strategy": kind,
        "score": score[group] / 1e9,
        "bits": bits[group],
        "evidence_offsets": evidence[0],
        "evidence_values": evidence[1],
        "rank": rank,
        "variant": variant[ranked_customer],
    }


def _evidence(catalogue, tuning, kind, reference, contributions) -> tuple[np.ndarray, np.ndarray]:
    """Each row's evidence as a list of numbers in the evidence texts (_Texts): the strongest strategy's source
    products (contribution desc, then id; at most seeds_per_customer), else its category, segment or order count."""
    rows = len(kind)
    products, categories = catalogue.products, len(catalogue.categories)
    single = np.zeros(rows, dtype=np.int64)
    lists = []  # (row, contribution, source) of the item-to-item rows
    for strategy, c in contributions.items():
        row = np.flatnonzero(kind == STRATEGY[strategy])
        if not len(row):
            continue
        group = reference[row]
        size = c.group_count[group]
        where = np.repeat(c.group_start[group] - np.cumsum(size) + size, size) + np.arange(size.sum())
        member = c.order[where]
        lists.append((np.repeat(row, size), c.contribution[member], c.source[member]))
    offsets_after = {  # texts after the product ids: category:, popular:, bought:
        "category_preference": products,
        "popular": products + categories,
        "repurchase": products + categories + len(catalogue.segments) - 1,
    }
    for strategy, offset in offsets_after.items():
        row = kind == STRATEGY[strategy]
        single[row] = offset + reference[row]
    values = single
    offsets = np.arange(rows + 1, dtype=np.int64)
    if lists:
        row = np.concatenate([r for r, _, _ in lists])
        contribution = np.concatenate([c for _, c, _ in lists])
        source = np.concatenate([s for _, _, s in lists])
        order = np.lexsort((source, -contribution, row))
        row, source = row[order], source[order]
        first = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        position = np.arange(len(row)) - np.repeat(first, np.diff(np.append(first, len(row))))
        keep = position < tuning.seeds_per_customer
        row, source, position = row[keep], source[keep], position[keep]
        listed = np.bincount(row, minlength=rows)
        counts = np.where(listed > 0, listed, 1)
        np.cumsum(counts, out=offsets[1:])
        values = np.empty(offsets[-1], dtype=np.int64)
        values[offsets[:-1]] = single
        values[offsets[row] + position] = source
    return offsets, values


# ---- text ----------------------------------------------------------------------------------------------------


@dataclass
class _Texts:
    """The texts the output rows refer to by number."""

    customer_ids: pa.Array
    product_ids: pa.Array
    strategies: pa.Array  # by strategy number
    strategy_sets: pa.Array  # by set of strategy bits: the names, sorted, comma-separated
    variants: pa.Array
    evidence: pa.Array  # product ids, then category:, popular: and bought: texts

    @classmethod
    def build(cls, catalogue: Catalogue, customers: Customers, weights: VariantWeights) -> _Texts:
        sets = [",".join(sorted(s for k, s in enumerate(STRATEGIES) if bits >> k & 1))
                for bits in range(1 << len(STRATEGIES))]
        most_orders = int(customers.repurchase["orders"].max(initial=1))
        extra = pa.concat_arrays([
            pc.binary_join_element_wise("category:", catalogue.categories, ""),
            pc.binary_join_element_wise("popular:", catalogue.segments, ""),
            pa.array([f"bought:{n}" for n in range(1, most_orders + 1)], type=pa.string()),
        ])
        product_ids = catalogue.product_ids.cast(pa.string())
        return cls(
            customer_ids=customers.customer_ids.cast(pa.string()),
            product_ids=product_ids,
            strategies=pa.array(STRATEGIES, type=pa.string()),
            strategy_sets=pa.array(sets, type=pa.string()),
            variants=pa.array(weights.variants, type=pa.string()),
            evidence=pa.concat_arrays([product_ids, extra.cast(pa.string())]),
        )

    def table(self, rows: dict[str, np.ndarray]) -> pa.Table:
        evidence = pa.ListArray.from_arrays(
            pa.array(rows["evidence_offsets"].astype(np.int32)), self.evidence.take(pa.array(rows["evidence_values"]))
        )
        return pa.table({
            "customer_id": self.customer_ids.take(pa.array(rows["customer"])),
            "product_id": self.product_ids.take(pa.array(rows["product"])),
            "recommendation_type": self.strategies.take(pa.array(rows["strategy"])),
            "recommendation_score": pa.array(rows["score"], type=pa.float64()),
            "strategies": self.strategy_sets.take(pa.array(rows["bits"])),
            "evidence": pc.binary_join(evidence, ","),
            "recommendation_rank": pa.array(rows["rank"], type=pa.int64()),
            "variant": self.variants.take(pa.array(rows["variant"])),
        })


# ---- integer helpers -----------------------------------------------------------------------------------------


def _expand(neighbours: Neighbours, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each source's neighbour list entry: the index of the source and the entry's position in the CSR."""
    start = neighbours.indptr[sources]
    count = neighbours.indptr[sources + 1] - start
    total = int(count.sum())
    source = np.repeat(np.arange(len(sources)), count)
    position = np.repeat(start - np.cumsum(count) + count, count) + np.arange(total)
    return source, position


def _group(keys: np.ndarray, customers: int, products: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The order that groups equal keys (key order, then index), where each group starts, and its key."""
    n = len(keys)
    shift = max(1, (n - 1).bit_length())
    assert (customers * products).bit_length() + shift <= 63, "batch too large for the packed sort"
    packed = np.sort((keys << shift) | np.arange(n, dtype=np.int64))
    order = packed & ((1 << shift) - 1)
    sorted_keys = packed >> shift
    start = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if n else np.zeros(0, np.int64)
    return order, start, sorted_keys[start]


def _half_away(x: np.ndarray) -> np.ndarray:
    """C's round(): to the nearest integer, halves away from zero (DuckDB's round(DOUBLE) and DOUBLE to DECIMAL)."""
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
    result = units / 1e12  # exact while the integer has at most 53 bits
    for i in np.flatnonzero(np.abs(units) >= 1 << 53):
        result[i] = int(units[i]) / UNITS
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
