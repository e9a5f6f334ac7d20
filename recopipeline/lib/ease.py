"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data"): a closed-form item-item model.

With X the binary customer x product purchase matrix and λ the L2 penalty, the item-item weights are

    P = (XᵀX + λI)⁻¹,   B[i, j] = -P[i, j] / P[j, j],   B[j, j] = 0,

and a customer's score for product j is Σ B[i, j] over the products i they bought. The inverse costs O(n³) time
and n² memory in the number of products n, so only the `max_items` most-bought products enter the model (the
co-occurrence kNN strategy, `collaborative`, covers the rest). Each product keeps its `top_k` largest positive
weights: on the Online Retail data that loses no accuracy (docs/evaluation.md) and keeps scoring a join.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.linalg import lapack

COLUMNS = ["product_key_1", "product_key_2", "ease_weight", "ease_rank"]


def _negated_weights(X: sparse.csr_matrix, l2: float) -> np.ndarray:
    """-B for a customers x items 0/1 matrix, computed in place (the dense n x n arrays dominate memory)."""
    return negated_weights_from_gram((X.T @ X).toarray(), l2)  # float64: X is


def negated_weights_from_gram(gram: np.ndarray, l2: float) -> np.ndarray:
    """-B from the item-item Gram matrix XᵀX (float64, n x n; overwritten). A Gram summed over groups of
    customers is the Gram of all of them (lib/shards.py sums the buckets')."""
    gram[np.diag_indices_from(gram)] += l2
    P = _inverse_of_positive_definite(gram)
    P /= np.diag(P).copy()  # -B[i, j] = P[i, j] / P[j, j]
    np.fill_diagonal(P, -0.0)
    return P


def _inverse_of_positive_definite(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix (overwritten, then returned as the inverse), by its
    Cholesky factor: half the work of a general inverse (LAPACK potrf + potri against getrf + getri)."""
    factor, info = lapack.dpotrf(matrix, lower=False, overwrite_a=True)
    if info == 0:
        inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:  # XᵀX + λI with λ > 0 is positive definite: only values beyond floating point get here
        raise np.linalg.LinAlgError(f"the penalised Gram matrix is not positive definite (LAPACK info {info})")
    # potri leaves the inverse in the upper triangle: mirror it into the lower one
    np.copyto(inverse, inverse.T, where=np.tri(len(inverse), k=-1, dtype=bool))
    return inverse


def ease_weights(X: sparse.csr_matrix, l2: float) -> np.ndarray:
    """The dense item-item matrix B for a customers x items 0/1 matrix."""
    B = _negated_weights(X, l2)
    np.negative(B, out=B)
    return B


def _top_neighbours(X: sparse.csr_matrix, items: np.ndarray, l2: float, top_k: int) -> pd.DataFrame:
    """Each item's top-k positive weights (ties by product key: items are sorted, so by column)."""
    return top_neighbours(_negated_weights(X, l2), items, top_k)


def top_neighbours(negated: np.ndarray, items: np.ndarray, top_k: int) -> pd.DataFrame:
    """Each item's top-k positive weights from -B (`negated`, n x n over `items`; overwritten), ties by product key.

    The weights are rounded to 9 decimals first, so a tie is a tie of the published weights: which of many products
    with the same weight are kept, and in which order, does not depend on the last bits of the inverse (which vary
    with the LAPACK routine, the BLAS build and its threads).
    """
    k = min(top_k, len(items) - 1)
    np.round(negated, 9, out=negated)
    # per row the k smallest of -B by (value, column): those below the k-th value, then the first columns equal to it
    kth = np.partition(negated, k - 1, axis=1)[:, k - 1 : k]
    below = negated < kth
    at_kth = negated == kth
    kept = below | (at_kth & (np.cumsum(at_kth, axis=1, dtype=np.int32) <= k - below.sum(axis=1, keepdims=True)))
    del below, at_kth
    candidates = np.nonzero(kept)[1].reshape(len(items), k)  # per row in column order
    negated_top = np.take_along_axis(negated, candidates, axis=1)
    del negated, kept
    order = np.lexsort((candidates, negated_top), axis=1)
    candidates = np.take_along_axis(candidates, order, axis=1)
    weights = -np.take_along_axis(negated_top, order, axis=1)
    rows = pd.DataFrame({
        "product_key_1": np.repeat(items, k),
        "product_key_2": items[candidates.ravel()],
        "ease_weight": weights.ravel() + 0.0,  # + 0.0: no -0.0
        "ease_rank": np.tile(np.arange(1, k + 1), len(items)),
    })
    return rows[rows.ease_weight > 0].reset_index(drop=True)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(COLUMNS, ["int32", "int32", "float64", "int64"])})


def fit_item_neighbours(purchases: pd.DataFrame, l2: float, max_items: int, top_k: int) -> pd.DataFrame:
    """Top-k positive EASE weights per product from (customer_key, product_key) purchases.

    Rows: product_key_1 (bought), product_key_2 (recommended), ease_weight, ease_rank (1 = largest weight; ties
    by product key). Empty when fewer than two products were bought.
    """
    pairs = purchases[["customer_key", "product_key"]].drop_duplicates()
    buyers = pairs.groupby("product_key").size().reset_index(name="buyers")
    buyers = buyers.sort_values(["buyers", "product_key"], ascending=[False, True]).head(max_items)
    items = np.sort(buyers.product_key.to_numpy())
    if len(items) < 2:
        return _empty()
    pairs = pairs[pairs.product_key.isin(set(items))]
    item_codes = pd.Categorical(pairs.product_key, categories=items).codes
    customer_codes = pd.factorize(pairs.customer_key)[0]
    return _top_neighbours(_matrix(customer_codes, item_codes, len(items)), items, l2, top_k)


def _matrix(customer_codes: np.ndarray, item_codes: np.ndarray, items: int) -> sparse.csr_matrix:
    return sparse.csr_matrix(
        (np.ones(len(item_codes), dtype=np.float64), (customer_codes, item_codes)),
        shape=(int(customer_codes.max()) + 1, items),
    )


# The same selection as fit_item_neighbours, in DuckDB: the max_items most-bought products (ties by key),
# numbered in key order, and each purchase as (customer number, item number).
ITEMS_SQL = """
CREATE OR REPLACE TEMP TABLE ease_items AS
WITH bought AS (
    SELECT DISTINCT customer_key, product_key FROM orders WHERE order_timestamp <= getvariable('as_of')
),
most_bought AS (
    SELECT product_key FROM bought GROUP BY product_key ORDER BY count(*) DESC, product_key LIMIT {max_items}
)
SELECT product_key, CAST(row_number() OVER (ORDER BY product_key) - 1 AS INTEGER) AS item FROM most_bought
"""
PURCHASES_SQL = """
WITH bought AS (
    SELECT DISTINCT customer_key, product_key FROM orders WHERE order_timestamp <= getvariable('as_of')
)
SELECT CAST(dense_rank() OVER (ORDER BY customer_key) - 1 AS INTEGER) AS customer, item
FROM bought JOIN ease_items USING (product_key)
"""
INPUTS = ("orders",)
ASSET = "ease_item_similarity"


def ease_item_similarity(con, tuning) -> str:
    """The stage's compute: fit EASE on the purchases up to the as-of time; returns the SQL of its rows."""
    con.execute(ITEMS_SQL.format(max_items=int(tuning.ease_max_items))).fetchall()
    items = np.asarray(con.sql("SELECT product_key FROM ease_items ORDER BY item").fetchnumpy()["product_key"])
    if len(items) < 2:
        neighbours = _empty()
    else:
        coded = con.sql(PURCHASES_SQL).fetchnumpy()
        X = _matrix(np.asarray(coded["customer"]), np.asarray(coded["item"]), len(items))
        neighbours = _top_neighbours(X, items, tuning.ease_l2, tuning.ease_top_k)
    con.register("ease_neighbours", neighbours)
    return "SELECT * FROM ease_neighbours"
