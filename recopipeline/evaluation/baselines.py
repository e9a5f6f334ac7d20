"""Baselines that any recommender must beat, computed from the training orders alone.

- global popularity: products by the number of orders that contain them (ties by product id);
- recent popularity: the same over the last `recent_days` before the cut;
- buy it again: the customer's own products by the number of their orders that contain them (ties by product
  id), then global popularity.

In the discovery variant the customer's own purchases are skipped, as the pipeline does with
exclude_purchased; "buy it again" then has nothing of its own to offer and is only scored in the repeat variant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import pandas as pd


def popularity_ranking(orders: pd.DataFrame, since: datetime | None = None) -> list[str]:
    """Products by the number of orders containing them, most first, ties by product id."""
    if since is not None:
        orders = orders[orders.order_timestamp >= since]
    counts = orders.groupby("product_id").order_id.nunique().reset_index(name="orders")
    counts = counts.sort_values(["orders", "product_id"], ascending=[False, True])
    return counts.product_id.tolist()


def own_purchases(orders: pd.DataFrame) -> dict[str, list[str]]:
    """Each customer's products by the number of their orders containing them, most first, ties by product id."""
    counts = orders.groupby(["customer_id", "product_id"]).order_id.nunique().reset_index(name="orders")
    counts = counts.sort_values(["customer_id", "orders", "product_id"], ascending=[True, False, True])
    return {c: group.product_id.tolist() for c, group in counts.groupby("customer_id", sort=False)}


def fill(first: Sequence[str], ranking: Iterable[str], k: int, skip: set[str] = frozenset()) -> list[str]:
    """`first`, then products of `ranking`, without duplicates or skipped products, cut at k."""
    out, seen = [], set(skip)
    for item in [*first, *ranking]:
        if item not in seen:
            out.append(item)
            seen.add(item)
            if len(out) == k:
                break
    return out


def baseline_lists(
    orders: pd.DataFrame,
    customers: Iterable[str],
    cut: datetime,
    k: int,
    exclude_own: bool,
    recent_days: int = 30,
) -> dict[str, dict[str, list[str]]]:
    """Top-k lists per baseline name for the given customers."""
    popular = popularity_ranking(orders)
    recent = popularity_ranking(orders, since=cut - timedelta(days=recent_days))
    own = own_purchases(orders)
    result: dict[str, dict[str, list[str]]] = {"global_popularity": {}, "recent_popularity": {}}
    if not exclude_own:
        result["buy_it_again"] = {}
    for customer in customers:
        bought = own.get(customer, [])
        skip = set(bought) if exclude_own else set()
        result["global_popularity"][customer] = fill([], popular, k, skip)
        result["recent_popularity"][customer] = fill([], recent, k, skip)
        if not exclude_own:
            result["buy_it_again"][customer] = fill(bought, popular, k)
    return result
