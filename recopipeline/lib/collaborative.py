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
import numba
import numpy as np
import pyarrow as pa

from recopipeline.lib.batch_stream import BatchStream
from recopipeline.lib.exact import UNITS, round_to_units, to_units, units_to_double
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import run

RESULT = "collaborative_item_similarity_pairs"  # the view collaborative_item_similarity() registers
WORKERS = 2
MAX_BATCH_WORK = 1 << 23  # (anchor, customer, other product) steps per batch: batches of even work for the threads
_CARRY = 1 << 62  # an accumulator is high x 2**62 + low, 0 <= low < 2**62: exact for any number of terms

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
    customer_start = np.flatnonzero(np.r_[True, customer[1:] != customer[:-1]]) if len(customer) else np.zeros(0, int)
    customer_of_row = (np.cumsum(np.r_[False, customer[1:] != customer[:-1]]) if len(customer) else
                       np.zeros(0, dtype=np.int64)).astype(np.int64)
    customer_start = np.append(customer_start, len(customer)).astype(np.int64)
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

    con.register(RESULT, BatchStream(SCHEMA, record_batch, _batches(work, tuning.batch_products), WORKERS))
    return f"SELECT * FROM {RESULT}"


def _batches(work: np.ndarray, most: int) -> list[tuple[int, int]]:
    """Ranges of consecutive anchor products, each within `most` products and about MAX_BATCH_WORK steps."""
    cumulative = np.concatenate([[0.0], np.cumsum(work)])
    ranges, low = [], 0
    while low < len(work):
        high = int(np.searchsorted(cumulative, cumulative[low] + MAX_BATCH_WORK, side="right")) - 1
        high = min(max(high, low + 1), low + most, len(work))
        ranges.append((low, high))
        low = high
    return ranges


def _exact_sum(high: int, low: int) -> float:
    return (int(high) * _CARRY + int(low)) / UNITS  # Python's int / int is correctly rounded


@numba.njit(cache=True, nogil=True)
def _dot(high: np.int64, low: np.int64) -> float:
    if high == 0:
        return units_to_double(low)
    with numba.objmode(total="float64"):
        total = _exact_sum(high, low)
    return total


@numba.njit(cache=True, nogil=True)
def item_pairs(
    low, high, product_start, by_product, customer_of_row, customer_start, product, affinity, norms,
    min_common, top_k,
):
    """The kept pairs of anchor products low..high-1: anchor, other product, common customers, similarity and
    rank, in (anchor, rank) order, products as numbers."""
    products = len(norms)
    accumulated_low = np.zeros(products, dtype=np.int64)
    accumulated_high = np.zeros(products, dtype=np.int64)
    common = np.zeros(products, dtype=np.int64)
    touched = np.empty(products, dtype=np.int32)
    best_product = np.empty(top_k, dtype=np.int32)
    best_common = np.empty(top_k, dtype=np.int64)
    best_score = np.empty(top_k, dtype=np.int64)
    limit = (high - low) * top_k
    out_first = np.empty(limit, dtype=np.int32)
    out_second = np.empty(limit, dtype=np.int32)
    out_common = np.empty(limit, dtype=np.int64)
    out_similarity = np.empty(limit, dtype=np.float64)
    out_rank = np.empty(limit, dtype=np.int64)
    rows = 0
    for anchor in range(low, high):
        others = 0
        for j in range(product_start[anchor], product_start[anchor + 1]):
            row = by_product[j]
            weight = affinity[row]
            holder = customer_of_row[row]
            for k in range(customer_start[holder], customer_start[holder + 1]):
                other = product[k]
                if other == anchor:
                    continue
                if common[other] == 0:
                    touched[others] = other
                    others += 1
                common[other] += 1
                term = to_units(weight * affinity[k])  # >= 0: affinities are ln(1 + a positive score)
                accumulated_high[other] += term >> 62
                accumulated_low[other] += term & (_CARRY - 1)
                if accumulated_low[other] >= _CARRY:
                    accumulated_low[other] -= _CARRY
                    accumulated_high[other] += 1
        kept = 0
        for t in range(others):
            other = touched[t]
            shared = common[other]
            if shared >= min_common:
                dot = _dot(accumulated_high[other], accumulated_low[other])
                score = round_to_units(dot / (norms[anchor] * norms[other]), 10**9)
                # insert into the best `top_k`: score desc, common customers desc, product number
                position = kept
                while position > 0 and (
                    best_score[position - 1] < score
                    or (best_score[position - 1] == score and (
                        best_common[position - 1] < shared
                        or (best_common[position - 1] == shared and best_product[position - 1] > other)))
                ):
                    if position < top_k:
                        best_score[position] = best_score[position - 1]
                        best_common[position] = best_common[position - 1]
                        best_product[position] = best_product[position - 1]
                    position -= 1
                if position < top_k:
                    best_score[position] = score
                    best_common[position] = shared
                    best_product[position] = other
                    if kept < top_k:
                        kept += 1
            accumulated_low[other] = 0
            accumulated_high[other] = 0
            common[other] = 0
        for r in range(kept):
            out_first[rows] = anchor
            out_second[rows] = best_product[r]
            out_common[rows] = best_common[r]
            out_similarity[rows] = best_score[r] / 1e9
            out_rank[rows] = r + 1
            rows += 1
    return out_first[:rows], out_second[:rows], out_common[:rows], out_similarity[:rows], out_rank[:rows]
