"""collaborative_item_similarity over integer keys, with the rows of `sql/collaborative_item_similarity.sql`.

Method. Each customer's strongest products (`collaborative_strongest_products`, prepared by the engine before the
compute) are read once into numpy, by customer and, inverted, by product. A compiled loop then takes the anchor
products in batches of consecutive numbers (key order, at most `batch_products` each): for an anchor, every
customer who holds it adds anchor affinity x other affinity, rounded to DECIMAL(38, 12) and summed exactly as
integers of 1e-12, into a dense accumulator over the other products, and counts the common customers; the pairs
with at least `cf_min_common_customers` are scored round(dot / (norm x norm), 9) and the `cf_top_k` best kept
(similarity desc, common customers desc, product key). No pair row is materialised: the SQL forms and groups one
row per (customer, anchor, other product), 76 million at scale l.
The result is a view over an Arrow stream (two threads compute batches ahead of the reader), in
(product_key_1, cf_rank) order.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa

from recopipeline.lib.batch_stream import BatchStream, work_ranges
from recopipeline.lib.kernels import item_pairs
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import run

RESULT = "collaborative_item_similarity_pairs"  # the view collaborative_item_similarity() registers
WORKERS = 2
MAX_BATCH_WORK = 1 << 23  # (anchor, customer, other product) steps per batch: batches of even work for the threads

SCHEMA = pa.schema([
    ("product_key_1", pa.int32()),
    ("product_key_2", pa.int32()),
    ("common_customers", pa.int64()),
    ("cf_similarity", pa.float64()),
    ("cf_rank", pa.int64()),
])


def collaborative_item_similarity(con: duckdb.DuckDBPyConnection, tuning: Tuning) -> str:
    """The SQL of the item pairs in `con` (which holds `collaborative_strongest_products`): a view that computes
    them batch by batch while it is read."""
    run(
        con,
        """CREATE OR REPLACE TEMP TABLE collaborative_products AS
           SELECT product_key, (row_number() OVER (ORDER BY product_key) - 1)::INTEGER AS product, norm
           FROM (SELECT product_key, any_value(norm) AS norm FROM collaborative_strongest_products GROUP BY ALL)""",
    )
    products = con.sql("SELECT product_key, norm FROM collaborative_products ORDER BY product").fetchnumpy()
    rows = con.sql(
        """SELECT s.customer_key, p.product, s.affinity
           FROM collaborative_strongest_products AS s
           JOIN collaborative_products AS p USING (product_key)
           ORDER BY s.customer_key, p.product"""
    ).fetchnumpy()
    run(con, "DROP TABLE collaborative_products")
    count = len(products["product_key"])
    customer = np.asarray(rows["customer_key"])
    product = np.asarray(rows["product"]).astype(np.int32)
    affinity = np.asarray(rows["affinity"]).astype(np.float64)
    first_of_customer = np.r_[True, customer[1:] != customer[:-1]] if len(customer) else np.zeros(0, dtype=bool)
    customer_of_row = np.cumsum(first_of_customer, dtype=np.int64) - 1  # rows are numbered customers, in order
    customer_start = np.append(np.flatnonzero(first_of_customer), len(customer)).astype(np.int64)
    by_product = np.argsort(product, kind="stable").astype(np.int64)  # each product's rows, in customer order
    product_start = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(product, minlength=count), out=product_start[1:])
    keys = np.asarray(products["product_key"]).astype(np.int32)
    norms = np.asarray(products["norm"]).astype(np.float64)
    # an anchor's work: over its customers, the products they hold
    sizes = np.diff(customer_start)
    work = np.bincount(product, weights=sizes[customer_of_row], minlength=count) if len(product) else np.zeros(count)
    arrays = (product_start, by_product, customer_of_row, customer_start, product, affinity, norms)

    def record_batch(low: int, high: int) -> pa.RecordBatch | None:
        first, second, common, similarity, rank = item_pairs(
            low, high, *arrays, tuning.cf_min_common_customers, tuning.cf_top_k
        )
        if not len(first):
            return None
        return pa.record_batch([
            pa.array(keys[first]), pa.array(keys[second]), pa.array(common), pa.array(similarity), pa.array(rank),
        ], schema=SCHEMA)

    con.register(RESULT, BatchStream(SCHEMA, record_batch, work_ranges(work, MAX_BATCH_WORK, tuning.batch_products), WORKERS))
    return f"SELECT * FROM {RESULT}"
