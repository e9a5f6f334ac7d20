"""Ranking metrics of top-k lists against sets of relevant products (binary relevance).

Every per-customer function takes the ranked list (best first) and the set of products the customer actually
bought in the test period. A list shorter than k simply has fewer chances to hit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

K_VALUES = (10, 20)


def hits(ranked: Sequence[str], relevant: set[str], k: int) -> int:
    return sum(1 for item in ranked[:k] if item in relevant)


def precision_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Relevant products among the first k, divided by k."""
    return hits(ranked, relevant, k) / k


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Relevant products among the first k, divided by the number of relevant products."""
    return hits(ranked, relevant, k) / len(relevant) if relevant else 0.0


def ndcg_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """DCG of the first k (gain 1 / log2(rank + 1)) over the DCG of a perfect list."""
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def average_precision_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Mean of precision@i at each rank i <= k that holds a relevant product, over min(|relevant|, k)."""
    found, total = 0, 0.0
    for rank, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            found += 1
            total += found / rank
    return total / min(len(relevant), k) if relevant else 0.0


def score_lists(
    lists: Mapping[str, Sequence[str]],
    truth: Mapping[str, set[str]],
    catalogue_size: int,
    k_values: Sequence[int] = K_VALUES,
) -> dict[str, float]:
    """Mean metrics over the customers in `truth`; a customer without a list counts as all zeros.

    coverage@k is the share of the catalogue that appears in at least one customer's first k; served is the
    share of the customers in `truth` who got a non-empty list.
    """
    customers = list(truth)
    if not customers:
        raise ValueError("no test customers to score")
    n = len(customers)
    result: dict[str, float] = {}
    for k in k_values:
        per = [(lists.get(c, ()), truth[c]) for c in customers]
        result[f"precision@{k}"] = sum(precision_at_k(r, t, k) for r, t in per) / n
        result[f"recall@{k}"] = sum(recall_at_k(r, t, k) for r, t in per) / n
        result[f"ndcg@{k}"] = sum(ndcg_at_k(r, t, k) for r, t in per) / n
        result[f"hit_rate@{k}"] = sum(1 for r, t in per if hits(r, t, k)) / n
        shown = {item for r, _t in per for item in r[:k]}
        result[f"coverage@{k}"] = len(shown) / catalogue_size if catalogue_size else 0.0
    result["map@20"] = sum(average_precision_at_k(lists.get(c, ()), truth[c], 20) for c in customers) / n
    result["served"] = sum(1 for c in customers if lists.get(c)) / n
    result["customers"] = float(n)
    return result


def paired_bootstrap(
    baseline: Mapping[str, Sequence[str]],
    other: Mapping[str, Sequence[str]],
    truth: Mapping[str, set[str]],
    k: int = 20,
    samples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean NDCG@k of `other` minus `baseline` over the customers in `truth`, with a 95 % percentile interval from
    `samples` resamplings of the customers (the same customers for both lists: a paired bootstrap)."""
    import numpy as np

    customers = list(truth)
    differences = np.array([
        ndcg_at_k(other.get(c, ()), truth[c], k) - ndcg_at_k(baseline.get(c, ()), truth[c], k) for c in customers
    ])
    draws = np.random.default_rng(seed).integers(0, len(customers), size=(samples, len(customers)))
    means = differences[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(differences.mean()), float(low), float(high)
