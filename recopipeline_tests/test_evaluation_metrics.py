"""Ranking metrics against values computed by hand."""

import math

import pytest

from recopipeline.evaluation.metrics import (
    average_precision_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    score_lists,
)

RANKED = ["a", "b", "c", "d", "e"]
RELEVANT = {"a", "c", "x"}  # hits at ranks 1 and 3; "x" is never recommended


def test_precision_and_recall_count_hits_in_the_first_k():
    assert precision_at_k(RANKED, RELEVANT, 2) == 0.5  # a
    assert precision_at_k(RANKED, RELEVANT, 5) == 2 / 5
    assert recall_at_k(RANKED, RELEVANT, 2) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, RELEVANT, 5) == pytest.approx(2 / 3)
    assert precision_at_k(RANKED[:1], RELEVANT, 10) == 0.1  # a short list still divides by k


def test_ndcg_discounts_by_log_rank_against_the_ideal_list():
    dcg = 1 / math.log2(2) + 1 / math.log2(4)  # hits at ranks 1 and 3
    ideal = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)  # three relevant products
    assert ndcg_at_k(RANKED, RELEVANT, 5) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(RANKED, RELEVANT, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(["c", "a"], {"a", "c"}, 2) == pytest.approx(1.0)
    assert ndcg_at_k(RANKED, set(), 5) == 0.0


def test_average_precision_averages_precision_at_each_hit():
    # precision@1 = 1, precision@3 = 2/3, divided by min(|relevant|, k) = 3
    assert average_precision_at_k(RANKED, RELEVANT, 5) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision_at_k(RANKED, RELEVANT, 2) == pytest.approx(1 / 2)  # min(3, 2) = 2


def test_score_lists_averages_over_test_customers_and_counts_coverage_and_serving():
    lists = {"c1": ["a", "b"], "c2": ["b", "a"]}  # c3 gets nothing
    truth = {"c1": {"a"}, "c2": {"a"}, "c3": {"z"}}
    scores = score_lists(lists, truth, catalogue_size=4, k_values=(1, 20))
    assert scores["precision@1"] == pytest.approx(1 / 3)  # only c1 hits at rank 1
    assert scores["hit_rate@20"] == pytest.approx(2 / 3)
    assert scores["recall@20"] == pytest.approx(2 / 3)
    assert scores["ndcg@20"] == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert scores["map@20"] == pytest.approx((1 + 1 / 2) / 3)
    assert scores["coverage@1"] == pytest.approx(2 / 4)  # a and b among 4 products
    assert scores["served"] == pytest.approx(2 / 3)
    assert scores["customers"] == 3


def test_scoring_no_customers_is_an_error():
    with pytest.raises(ValueError, match="no test customers"):
        score_lists({}, {}, catalogue_size=1)
