"""The evaluation's split, baselines and EASE model on tiny hand-made data."""

import dataclasses
import re
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recopipeline.evaluation.baselines import baseline_lists, fill, own_purchases, popularity_ranking
from recopipeline.evaluation.split import ground_truth
from recopipeline.lib.ease import ease_weights, fit_item_neighbours
from recopipeline.lib.stages import STAGES, stages_to_rerun
from recopipeline.lib.tuning import Tuning

CUT = datetime(2011, 10, 1)


def purchases(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "product_id"])


def test_truth_keeps_customers_with_history_and_splits_new_from_repeated_products():
    before = purchases(("A", "p1"), ("A", "p2"), ("B", "p1"), ("C", "p3"))
    after = purchases(("A", "p1"), ("A", "p3"), ("B", "p1"), ("D", "p1"))  # D has no history: not tested
    truth = ground_truth(before, after)
    assert truth.repeat == {"A": {"p1", "p3"}, "B": {"p1"}}  # C bought nothing after the cut
    assert truth.discovery == {"A": {"p3"}}  # B only re-bought: no discovery truth


def orders(*rows) -> pd.DataFrame:
    return pd.DataFrame(
        [(f"O{i}", c, p, pd.Timestamp(t)) for i, (c, p, t) in enumerate(rows)],
        columns=["order_id", "customer_id", "product_id", "order_timestamp"],
    )


ORDERS = orders(
    ("A", "p2", "2011-09-20"), ("A", "p2", "2011-09-21"), ("A", "p1", "2011-05-01"),
    ("B", "p3", "2011-05-02"), ("B", "p3", "2011-05-03"), ("B", "p3", "2011-05-04"),
    ("C", "p4", "2011-09-25"), ("C", "p1", "2011-09-26"),
)


def test_popularity_counts_orders_and_breaks_ties_by_product_id():
    assert popularity_ranking(ORDERS) == ["p3", "p1", "p2", "p4"]  # p1 and p2 tie at 2: p1 first
    assert popularity_ranking(ORDERS, since=datetime(2011, 9, 1)) == ["p2", "p1", "p4"]


def test_buy_it_again_ranks_own_products_by_orders_then_fills_with_popularity():
    assert own_purchases(ORDERS)["A"] == ["p2", "p1"]
    lists = baseline_lists(ORDERS, ["A", "C"], CUT, k=3, exclude_own=False)
    assert lists["buy_it_again"]["A"] == ["p2", "p1", "p3"]
    assert lists["buy_it_again"]["C"] == ["p1", "p4", "p3"]  # own products tie at one order: by id
    assert lists["global_popularity"]["A"] == ["p3", "p1", "p2"]


def test_discovery_baselines_skip_own_purchases_and_have_no_buy_it_again():
    lists = baseline_lists(ORDERS, ["A"], CUT, k=3, exclude_own=True)
    assert set(lists) == {"global_popularity", "recent_popularity"}
    assert lists["global_popularity"]["A"] == ["p3", "p4"]
    assert lists["recent_popularity"]["A"] == ["p4"]  # the only other product bought in the last 30 days
    assert fill(["x", "y"], ["y", "z"], 5, skip={"x"}) == ["y", "z"]


def test_ease_weights_match_the_closed_form():
    X = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1], [1, 0, 0]], dtype=float)
    from scipy import sparse

    B = ease_weights(sparse.csr_matrix(X), l2=1.0)
    P = np.linalg.inv(X.T @ X + np.eye(3))
    expected = -P / np.diag(P)
    np.fill_diagonal(expected, 0.0)
    assert B == pytest.approx(expected)


def test_ease_neighbours_keep_positive_top_k_and_the_most_bought_items():
    bought = pd.DataFrame(  # customer and product keys
        [(1, 1), (1, 2), (2, 1), (2, 2), (3, 2), (3, 3), (4, 4), (5, 1)], columns=["customer_key", "product_key"]
    )
    table = fit_item_neighbours(bought, l2=0.5, max_items=3, top_k=1)
    assert set(table.product_key_1) <= {1, 2, 3}  # 4 (one buyer, last by key) is left out
    assert (table.ease_weight > 0).all() and (table.ease_rank == 1).all()
    assert dict(zip(table.product_key_1, table.product_key_2))[1] == 2  # 1's buyers mostly bought 2


def test_ease_neighbours_of_equal_weight_are_taken_by_product_key():
    # 20, 30 and 40 are each bought with 10 by one customer: their weights from 10 are equal (up to the last bits
    # of the inverse), so the two kept are the two smallest keys, in key order
    bought = pd.DataFrame([(1, 10), (1, 40), (2, 10), (2, 30), (3, 10), (3, 20)], columns=["customer_key", "product_key"])
    table = fit_item_neighbours(bought, l2=0.5, max_items=4, top_k=2)
    from_10 = table[table.product_key_1 == 10]
    assert from_10.product_key_2.tolist() == [20, 30] and from_10.ease_rank.tolist() == [1, 2]
    assert from_10.ease_weight.nunique() == 1


def test_a_blend_weight_reruns_only_the_blend_what_ranks_it_and_the_model_trained_on_it():
    assert stages_to_rerun(Tuning(), Tuning(weight_ease=2.0)) == [
        "ranking_model", "product_recommendations", "candidate_features", "learned_recommendations",
        "customer_top_recommendations"]
    rerun = stages_to_rerun(Tuning(), Tuning(ease_l2=10.0))
    assert rerun[0] == "ease_item_similarity" and "customer_segments" not in rerun
    assert "customer_product_affinity" in stages_to_rerun(Tuning(), Tuning(weight_view=2.0))


def test_every_tuning_value_a_python_compute_reads_is_declared():
    """`stages_to_rerun` trusts a Python stage's `reads`: a value it reads but does not declare would leave stale
    tables after a change of that value."""
    fields = {f.name for f in dataclasses.fields(Tuning)}
    for spec in STAGES:
        if spec.compute is None:
            continue
        source = Path(sys.modules[spec.compute.__module__].__file__).read_text()
        read = set(re.findall(r"tuning\.(\w+)", source)) | set(re.findall(r"getvariable\('(\w+)'\)", source))
        # batch sizes change the memory, never the rows (test_blend.py, test_collaborative.py)
        assert (read & fields) - {"batch_customers", "batch_products"} <= spec.tuning_read(), spec.name
