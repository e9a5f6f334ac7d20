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


def ease_weights(X: sparse.csr_matrix, l2: float) -> np.ndarray:
    """The dense item-item matrix B for a customers x items 0/1 matrix."""
    gram = (X.T @ X).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    P = np.linalg.inv(gram)
    B = -P / np.diag(P)
    np.fill_diagonal(B, 0.0)
    return B


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
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(COLUMNS, ["str", "str", "float64", "int64"])})
    pairs = pairs[pairs.product_id.isin(set(items))]
    item_codes = pd.Categorical(pairs.product_id, categories=items).codes
    customer_codes = pd.factorize(pairs.customer_id)[0]
    X = sparse.csr_matrix(
        (np.ones(len(pairs), dtype=np.float64), (customer_codes, item_codes)),
        shape=(customer_codes.max() + 1, len(items)),
    )
    B = ease_weights(X, l2)
    k = min(top_k, len(items) - 1)
    # per row, the k largest weights; order by weight desc, then product id (items are sorted, so by column)
    candidates = np.argpartition(-B, k - 1, axis=1)[:, :k]
    weights = np.take_along_axis(B, candidates, axis=1)
    order = np.lexsort((candidates, -weights), axis=1)
    candidates = np.take_along_axis(candidates, order, axis=1)
    weights = np.take_along_axis(weights, order, axis=1)
    rows = pd.DataFrame({
        "product_id_1": np.repeat(items, k),
        "product_id_2": items[candidates.ravel()],
        "ease_weight": np.round(weights.ravel(), 9),
        "ease_rank": np.tile(np.arange(1, k + 1), len(items)),
    })
    return rows[rows.ease_weight > 0].reset_index(drop=True)


PURCHASES_SQL = """
SELECT DISTINCT customer_id, product_id FROM orders WHERE order_timestamp <= getvariable('as_of')
"""
INPUTS = ("orders",)
ASSET = "ease_item_similarity"


def ease_item_similarity(con, tuning) -> str:
    """The stage's compute: fit EASE on the purchases up to the as-of time; returns the SQL of its rows."""
    purchases = con.sql(PURCHASES_SQL).df()
    neighbours = fit_item_neighbours(purchases, tuning.ease_l2, tuning.ease_max_items, tuning.ease_top_k)
    con.register("ease_neighbours", neighbours)
    return "SELECT * FROM ease_neighbours"
