"""The blend (product_recommendations) over integer ids, with the rows of `sql/product_recommendations.sql`.

Method. DuckDB numbers the customer and product keys densely in key order (so number order is the SQL's key
order) and the inputs are read once into numpy: the per-customer tables sorted by customer, the product-side tables
as neighbour lists (CSR, rows = source product) of available candidates. Customers are then blended in batches of
consecutive numbers by a compiled per-customer loop (`kernels.blend_batch`): each strategy's candidates are
walked once and summed per (product, strategy) in a dense slot table, normalised by the customer's best in the
strategy, weighted by the customer's A/B variant, blended per product, ranked and cut to `candidates_per_customer`,
with the SQL's DECIMAL arithmetic reproduced exactly; evidence lists the sources of the strongest item-to-item
strategy (contribution desc, then key), named by their ids (product_keys) only in the output. Each row also
carries every strategy's normalised score (`<strategy>_score`, SCORE_COLUMNS: the value the blend weights, 0.0
where the strategy did not propose the product or has no weight in the customer's variant).
The result is a view over an Arrow stream: reading it computes the batches (two threads ahead of the reader) in
(customer_key, recommendation_rank) order.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recopipeline.lib.batch_stream import BatchStream, work_ranges
from recopipeline.lib.kernels import UNITS, blend_batch, to_units
from recopipeline.lib.tuning import STRATEGIES, Tuning
from recopipeline.lib.warehouse import load_sql, run

RESULT = "product_recommendations_blend"  # the view product_recommendations() registers
SEED_STRATEGIES = {  # strategy -> (neighbour table, score column, rank column), scored from the customer's seeds
    "affinity_similar": ("product_similarity", "attribute_similarity_score", "similarity_rank"),
    "collaborative": ("collaborative_item_similarity", "cf_similarity", "cf_rank"),
    "complementary": ("complementary_products", "complementary_score", "complementary_rank"),
}
ITEM_STRATEGIES = (*SEED_STRATEGIES, "ease")  # their evidence lists source products
STRATEGY = {name: index for index, name in enumerate(STRATEGIES)}  # a strategy's priority is its index + 1
ITEM_MASK = np.array([s in ITEM_STRATEGIES for s in STRATEGIES])  # by strategy number
SCORE_COLUMNS = tuple(f"{s}_score" for s in STRATEGIES)  # per row: each strategy's normalised score
MAX_BATCH_ROWS = 1 << 22  # strategy rows walked per batch: batches of even work for the threads
WORKERS = 2  # threads computing batches


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
    assert len(STRATEGIES) <= 8, "a row's set of strategies is a uint8 of bits; the strength packs the priority in 4"
    buckets = tuning.experiment().buckets()
    names = tuple(name for name, _, _ in buckets)
    weights = np.array([[per_variant[name][s] for s in STRATEGIES] for name in names], dtype=np.float64)
    totals = [sum(int(to_units(w)) for w in row) / UNITS for row in weights.tolist()]  # the DECIMAL sum
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
    work = _work(customers, catalogue)
    inputs = _kernel_inputs(catalogue, customers, weights, tuning)

    def record_batch(low: int, high: int) -> pa.RecordBatch | None:
        rows = _blend_batch(catalogue, inputs, work, low, high)
        return None if rows is None else texts.batch(rows)

    con.register(RESULT, BatchStream(SCHEMA, record_batch, work_ranges(work, MAX_BATCH_ROWS, tuning.batch_customers), WORKERS))
    # the texts of few values as ENUMs: Parquet stores them as the same dictionary-encoded strings (read back as
    # VARCHAR), and DuckDB's writer skips hashing 19 million strings per column at scale l (about 2 s)
    named = {"recommendation_type": texts.strategies, "strategies": texts.strategy_sets, "variant": texts.variants}
    enums = ", ".join(f"{column}::{_enum(values)} AS {column}" for column, values in named.items())
    return f"SELECT * REPLACE ({enums}) FROM {RESULT}"


def _enum(values: pa.Array) -> str:
    """An ENUM type of the distinct texts."""
    distinct = sorted(set(values.to_pylist()))
    return "ENUM(" + ", ".join("'" + value.replace("'", "''") + "'" for value in distinct) + ")"


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
    product_keys: pa.Array  # by product number
    product_ids: pa.Array  # by product number (the evidence names products by id)
    categories: pa.Array  # category names by category number
    segments: pa.Array  # segment names by segment number
    item: dict[str, Neighbours]  # item-to-item strategy -> neighbours of each source product
    category_products: Neighbours  # category -> its top products (data: popularity score)
    category_best: np.ndarray  # per category: the best popularity score among its top products
    popular: Neighbours  # segment -> its popular products (data: raw score)
    trending: dict[str, np.ndarray]  # product, score: the trending list, every known customer's (by product)

    @property
    def evidence_offset(self) -> np.ndarray:
        """Per strategy: the evidence text of source number 0 (see _Texts.evidence)."""
        offsets = np.zeros(len(STRATEGIES), dtype=np.int64)
        offsets[STRATEGY["category_preference"]] = self.products
        offsets[STRATEGY["popular"]] = self.products + len(self.categories)
        offsets[STRATEGY["trending"]] = self.products + len(self.categories) + len(self.segments)
        offsets[STRATEGY["repurchase"]] = self.products + len(self.categories) + len(self.segments)
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
    known: np.ndarray  # per customer: has a customer_segments row (every known customer: trending's audience)
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
         "SELECT product_key FROM product_popularity", "SELECT product_key FROM product_repurchase_rates",
         "SELECT product_key FROM product_trending"]
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
    trending = _fetch(
        con,
        """SELECT p.product, t.trending_score::DOUBLE AS score
           FROM product_trending AS t
           JOIN blend_products AS p USING (product_key)
           WHERE t.trending_rank <= getvariable('trending_products') AND p.available
           ORDER BY p.product""" if active["trending"] else
        "SELECT 0::INTEGER AS product, 0::DOUBLE AS score WHERE FALSE",
    )
    return Catalogue(
        products=products,
        product_keys=numbered["product_key"].combine_chunks(),
        product_ids=numbered["product_id"].combine_chunks(),
        categories=categories["category"].combine_chunks(),
        segments=segments["segment"].combine_chunks(),
        item=item,
        category_products=category_products,
        category_best=category_best,
        popular=popular,
        trending={"product": trending["product"].astype(np.int32), "score": trending["score"].astype(np.float64)},
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
    known = np.zeros(count, dtype=np.bool_)
    if active["trending"]:
        known[_fetch(con, "SELECT c.customer FROM customer_segments JOIN blend_customers AS c USING (customer_key)")
              ["customer"]] = True
    repurchase = _fetch(
        con,
        # each order weighted by its age, times the product's repurchase_factor (sql/customer_repurchase_scores.sql)
        f"""WITH repurchase AS ({load_sql('customer_repurchase_scores')})
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
        known=known,
        repurchase=repurchase,
        pointers=pointers,
    )


# ---- batches -------------------------------------------------------------------------------------------------


def _work(customers: Customers, catalogue: Catalogue) -> np.ndarray:
    """Per customer: the most strategy rows the blend can walk (neighbour list entries, category products, ...)."""
    count = customers.count
    work = np.zeros(count, dtype=np.int64)
    seeds, affinity = customers.seeds, customers.affinity
    for strategy, neighbours in catalogue.item.items():
        if strategy == "ease":
            bought = affinity["bought"]
            degree = neighbours.degree(affinity["product"][bought])
            work += np.bincount(affinity["customer"][bought], weights=degree, minlength=count).astype(np.int64)
        else:
            work += np.bincount(seeds["customer"], weights=neighbours.degree(seeds["product"]),
                                minlength=count).astype(np.int64)
    categories = customers.categories
    work += np.bincount(categories["customer"], weights=catalogue.category_products.degree(categories["category"]),
                        minlength=count).astype(np.int64)
    has_segment = customers.segment >= 0
    work[has_segment] += catalogue.popular.degree(customers.segment[has_segment])
    work[customers.known] += len(catalogue.trending["product"])
    work += np.diff(customers.pointers["repurchase"])
    return work


def _kernel_inputs(catalogue: Catalogue, customers: Customers, weights: VariantWeights, tuning: Tuning) -> tuple:
    """The arguments of kernels.blend_batch after (low, high, products, capacity), in its order."""
    item = list(catalogue.item.items())
    sizes = np.cumsum([0] + [len(n.indices) for _, n in item])
    indptr = np.stack([n.indptr + offset for (_, n), offset in zip(item, sizes)]) if item else \
        np.zeros((0, catalogue.products + 1), dtype=np.int64)
    indices = np.concatenate([n.indices for _, n in item]) if item else np.zeros(0, dtype=np.int32)
    data = np.concatenate([n.data for _, n in item]) if item else np.zeros(0, dtype=np.float64)
    start = customers.pointers
    seeds, affinity, ordered = customers.seeds, customers.affinity, customers.ordered
    categories, repurchase = customers.categories, customers.repurchase
    return (
        customers.variant, weights.weights, weights.total_weights, customers.segment, customers.known,
        start["seeds"], seeds["product"], seeds["affinity"].astype(np.float64),
        start["affinity"], affinity["product"], affinity["bought"].astype(np.bool_),
        start["ordered"], ordered["product"],
        start["categories"], categories["category"].astype(np.int32), categories["score"].astype(np.float64),
        start["repurchase"], repurchase["product"], repurchase["raw_score"].astype(np.float64),
        repurchase["orders"].astype(np.int64),
        np.array([STRATEGY[s] for s, _ in item], dtype=np.int64), np.array([s == "ease" for s, _ in item]),
        indptr, indices, data,
        catalogue.category_products.indptr, catalogue.category_products.indices,
        catalogue.category_products.data.astype(np.float64), catalogue.category_best,
        catalogue.popular.indptr, catalogue.popular.indices, catalogue.popular.data,
        catalogue.trending["product"], catalogue.trending["score"],
        ITEM_MASK, catalogue.evidence_offset, STRATEGY["collaborative"], STRATEGY["category_preference"],
        STRATEGY["repurchase"], STRATEGY["popular"], STRATEGY["trending"],
        tuning.exclude_purchased, tuning.candidates_per_customer, tuning.seeds_per_customer,
    )


def _blend_batch(catalogue: Catalogue, inputs: tuple, work: np.ndarray, low: int, high: int) -> dict | None:
    """The output rows of customers low..high-1, in (customer, rank) order, as numbers."""
    capacity = max(1, int(work[low:high].max()))
    (customer, product, strategy, score, bits, rank, variant, offsets, evidence, normalised) = blend_batch(
        low, high, catalogue.products, capacity, *inputs)
    if not len(customer):
        return None
    return {"low": low, "high": high, "customer": customer, "product": product, "strategy": strategy,
            "score": score, "bits": bits, "evidence_offsets": offsets, "evidence_values": evidence, "rank": rank,
            "variant": variant, "normalised": normalised}


# ---- output --------------------------------------------------------------------------------------------------


SCHEMA = pa.schema([
    ("customer_key", pa.int32()),
    ("product_key", pa.int32()),
    ("recommendation_type", pa.dictionary(pa.int8(), pa.string())),
    ("recommendation_score", pa.float64()),
    ("strategies", pa.dictionary(pa.int16(), pa.string())),  # by set of strategy bits: 2**8 sets
    ("evidence", pa.string()),
    ("recommendation_rank", pa.int64()),
    ("variant", pa.dictionary(pa.int8(), pa.string())),
    *((column, pa.float64()) for column in SCORE_COLUMNS),
])


@dataclass
class _Texts:
    """The texts the output rows refer to by number."""

    customer_keys: pa.Array
    product_keys: pa.Array
    strategies: pa.Array  # by strategy number
    strategy_sets: pa.Array  # by set of strategy bits: the names, sorted, comma-separated
    variants: pa.Array
    evidence: pa.Array  # product ids, then category:, popular:, trending and bought: texts (Catalogue.evidence_offset)

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
            pa.array(["trending"], type=pa.string()),
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
            pa.DictionaryArray.from_arrays(pa.array(rows["bits"].astype(np.int16)), self.strategy_sets),
            pc.binary_join(evidence, ","),
            pa.array(rows["rank"], type=pa.int64()),
            pa.DictionaryArray.from_arrays(pa.array(rows["variant"]), self.variants),
            *(pa.array(scores, type=pa.float64()) for scores in rows["normalised"]),  # strategies x rows
        ], schema=SCHEMA)
