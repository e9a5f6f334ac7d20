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

COLUMNS = ["product_id_1", "product_id_2", "ease_weight", "ease_rank"]


def _negated_weights(X: sparse.csr_matrix, l2: float) -> np.ndarray:
    """-B for a customers x items 0/1 matrix, computed in place (the dense n x n arrays dominate memory)."""
    gram = (X.T @ X).toarray()  # float64: X is
    gram[np.diag_indices_from(gram)] += l2
    P = np.linalg.inv(gram)
    del gram
    P /= np.diag(P).copy()  # -B[i, j] = P[i, j] / P[j, j]
    np.fill_diagonal(P, -0.0)
    return P


def ease_weights(X: sparse.csr_matrix, l2: float) -> np.ndarray:
    """The dense item-item matrix B for a customers x items 0/1 matrix."""
    B = _negated_weights(X, l2)
    np.negative(B, out=B)
    return B


def _top_neighbours(X: sparse.csr_matrix, items: np.ndarray, l2: float, top_k: int) -> pd.DataFrame:
    """Each item's top-k positive weights (ties by product id: items are sorted, so by column)."""
    negated = _negated_weights(X, l2)
    k = min(top_k, len(items) - 1)
    candidates = np.argpartition(negated, k - 1, axis=1)[:, :k]
    negated_top = np.take_along_axis(negated, candidates, axis=1)
    del negated
    order = np.lexsort((candidates, negated_top), axis=1)
    candidates = np.take_along_axis(candidates, order, axis=1)
    weights = -np.take_along_axis(negated_top, order, axis=1)
    rows = pd.DataFrame({
        "product_id_1": np.repeat(items, k),
        "product_id_2": items[candidates.ravel()],
        "ease_weight": np.round(weights.ravel(), 9),
        "ease_rank": np.tile(np.arange(1, k + 1), len(items)),
    })
    return rows[rows.ease_weight > 0].reset_index(drop=True)


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(COLUMNS, ["str", "str", "float64", "int64"])})


def fit_item_neighbours(purchases: pd.DataFrame, l2: float, max_items: int, top_k: int) -> pd.DataFrame:
    """Top-k positive EASE weights per product from (customer_id, product_id) purchases.

    Rows: product_id_1 (bought), product_id_2 (recommended), ease_weight, ease_rank (1 = largest weight; ties
    by product id). Empty when fewer than two products were bought.
    """
    pairs = purchases[["customer_id", "product_id"]].drop_duplicates()
    buyers = pairs.groupby("product_id").size().reset_index(name="buyers")
    buyers = buyers.sort_values(["buyers", "product_id"], ascending=[False, True]).head(max_items)
    items = np.sort(buyers.product_id.to_numpy())
    if len(items) < 2:
        return _empty()
    pairs = pairs[pairs.product_id.isin(set(items))]
    item_codes = pd.Categorical(pairs.product_id, categories=items).codes
    customer_codes = pd.factorize(pairs.customer_id)[0]
    return _top_neighbours(_matrix(customer_codes, item_codes, len(items)), items, l2, top_k)


def _matrix(customer_codes: np.ndarray, item_codes: np.ndarray, items: int) -> sparse.csr_matrix:
    return sparse.csr_matrix(
        (np.ones(len(item_codes), dtype=np.float64), (customer_codes, item_codes)),
        shape=(int(customer_codes.max()) + 1, items),
    )


# The same selection as fit_item_neighbours, in DuckDB: the max_items most-bought products (ties by id),
# numbered in id order, and each purchase as (customer number, item number).
ITEMS_SQL = """
CREATE OR REPLACE TEMP TABLE ease_items AS
WITH bought AS (
    SELECT DISTINCT customer_id, product_id FROM orders WHERE order_timestamp <= getvariable('as_of')
),
most_bought AS (
    SELECT product_id FROM bought GROUP BY product_id ORDER BY count(*) DESC, product_id LIMIT {max_items}
)
SELECT product_id, CAST(row_number() OVER (ORDER BY product_id) - 1 AS INTEGER) AS item FROM most_bought
"""
PURCHASES_SQL = """
WITH bought AS (
    SELECT DISTINCT customer_id, product_id FROM orders WHERE order_timestamp <= getvariable('as_of')
)
SELECT CAST(dense_rank() OVER (ORDER BY customer_id) - 1 AS INTEGER) AS customer, item
FROM bought JOIN ease_items USING (product_id)
"""
INPUTS = ("orders",)
ASSET = "ease_item_similarity"


def ease_item_similarity(con, tuning) -> str:
    """The stage's compute: fit EASE on the purchases up to the as-of time; returns the SQL of its rows."""
    con.execute(ITEMS_SQL.format(max_items=int(tuning.ease_max_items))).fetchall()
    items = np.array(con.sql("SELECT product_id FROM ease_items ORDER BY item").fetchnumpy()["product_id"],
                     dtype=object)
    if len(items) < 2:
        neighbours = _empty()
    else:
        coded = con.sql(PURCHASES_SQL).fetchnumpy()
        X = _matrix(np.asarray(coded["customer"]), np.asarray(coded["item"]), len(items))
        neighbours = _top_neighbours(X, items, tuning.ease_l2, tuning.ease_top_k)
    con.register("ease_neighbours", neighbours)
    return "SELECT * FROM ease_neighbours"
