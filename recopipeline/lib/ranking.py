"""The learned ranking: a LightGBM ranking model over the blend's candidates, trained on the shop's own history and
used only when it beats the hand-set blend.

Training (the stage `ranking_model`). The stages up to `candidate_features` run again, through the same engine, as
of `as_of - ranking_window_days`, in the stage's own session over the sources (the hourly refresh computes its
customers the same way); every stage reads data up to its as-of time only. A candidate's label is whether its
customer ordered the product in the window that follows, up to `as_of`. The customers with an order in the window
are split by a stable hash of their key: `ranking_holdout_share` of them are held out, and a LightGBM ranker
(objective `ranking_objective`: rank_xendcg, or lambdarank) is fitted on the candidates of the others. On the
held-out customers, NDCG@20 of the model's order and of the blend's order are compared (the ideal counts every
product they ordered, whether a candidate or not): the model is **promoted** when its NDCG is at least
`1 + ranking_promotion_margin` times the blend's. The stage's one row holds the model (LightGBM's text format),
whether it is promoted, the held-out figures and the feature importances.

Application (the stage `learned_recommendations`). With a promoted model (and `learned_ranking` on) each of the
blend's candidates gets the model's score, mapped to (0, 1) by the logistic function, and its rank by it (ties by
the blend's rank); otherwise the stage has no rows. The top N takes these ranks and scores where there are any
(`sql/customer_top_recommendations.sql`); type, evidence, strategies and variant always stay the blend's. A row's
score depends only on its own features, so batches do not matter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import run

MODEL = "ranking_model"
FEATURES_STAGE = "candidate_features"
K = 20  # the list length the model is fitted and judged on
PREDICT_ROWS = 1 << 20  # candidates scored at a time
QUERY_SPAN = 1 << 32  # a training query: window number x QUERY_SPAN + customer key
FEATURES = (
    "blend_rank", "blend_score",
    "affinity_similar_score", "collaborative_score", "ease_score", "complementary_score",
    "category_preference_score", "repurchase_score", "popular_score", "trending_score", "proposing_strategies",
    "customer_events", "customer_orders", "customer_recent_orders", "customer_order_value", "customer_age_days",
    "customer_idle_days",
    "product_affinity", "product_views", "product_cart_adds", "product_orders", "days_since_bought",
    "category_affinity", "category_rank", "brand_affinity",
    "product_buyers", "product_repeat_rate", "product_recent_orders", "product_recent_trend", "popularity_score",
    "popularity_rank", "product_trend", "price", "product_age_days",
    "order_rate", "days_since_first_bought", "reorder_interval_days", "due_ratio", "orders_since_bought",
    "quantity_bought", "quantity_per_order", "customer_products", "customer_reorder_share",
    "customer_days_since_order", "customer_order_interval",
)
RANKING_VALUES = frozenset(f.name for f in fields(Tuning) if f.name.startswith("ranking_")) | {"learned_ranking"}


@dataclass(frozen=True)
class Fitted:
    model: str  # LightGBM's text format; '' when nothing was trained
    promoted: bool
    reason: str
    train_customers: int
    holdout_customers: int
    holdout_ndcg_model: float
    holdout_ndcg_blend: float
    importances: dict[str, float]

    def row(self, trained_as_of: datetime, labels_until: datetime, window_days: int) -> pa.Table:
        return pa.table({
            "trained_as_of": [trained_as_of], "labels_until": [labels_until], "window_days": [window_days],
            "promoted": [self.promoted], "reason": [self.reason],
            "train_customers": [self.train_customers], "holdout_customers": [self.holdout_customers],
            "holdout_ndcg_model": [self.holdout_ndcg_model], "holdout_ndcg_blend": [self.holdout_ndcg_blend],
            "feature_importances": [json.dumps(self.importances)], "features": [json.dumps(list(FEATURES))],
            "model": [self.model],
        })


# ---- training ----------------------------------------------------------------------------------------------
def ranking_model(con: duckdb.DuckDBPyConnection, tuning: Tuning) -> str:
    """The compute of `ranking_model`: the training set built as of `as_of - ranking_window_days` in `con` (whose
    views are the sources), the model fitted and judged; the SQL of its one row."""
    from recopipeline.lib.stages import compute_into, upstream_stages  # the engine, whose stage this is

    (as_of,) = run(con, "SELECT getvariable('as_of')")[0]
    window = timedelta(days=tuning.ranking_window_days)
    train_as_of = as_of - window * tuning.ranking_windows
    if not tuning.learned_ranking:
        fitted = unfitted("the learned ranking is off (learned_ranking = false)")
    else:
        sets = []
        for number in range(tuning.ranking_windows):  # the most recent window first
            start = as_of - window * (number + 1)
            run(con, "SET VARIABLE as_of = $t", {"t": start})
            try:
                for spec in upstream_stages(FEATURES_STAGE):
                    for name in (*spec.prepared, spec.name):
                        run(con, f"DROP TABLE IF EXISTS {name}")
                    compute_into(con, spec, tuning)
            finally:
                run(con, "SET VARIABLE as_of = $t", {"t": as_of})
            sets.append(training_set(con, tuning, start, start + window, number))
        fitted = fit(pd.concat([c for c, _ in sets], ignore_index=True), pd.concat([t for _, t in sets]), tuning)
    con.register("ranking_model_row", fitted.row(train_as_of, as_of, tuning.ranking_window_days))
    return "SELECT * FROM ranking_model_row"


def training_set(
    con: duckdb.DuckDBPyConnection, tuning: Tuning, train_as_of: datetime, as_of: datetime, number: int = 0
) -> tuple[pd.DataFrame, pd.Series]:
    """The candidates as of `train_as_of` with their features and label, in (customer, blend rank) order, and per
    customer the number of products they ordered until `as_of` (the truth; without those bought before when
    purchases are excluded). A query is one customer in window `number`."""
    params = {"start": train_as_of, "end": as_of}
    run(con, """
        CREATE OR REPLACE TEMP TABLE ranking_truth AS
        SELECT DISTINCT customer_key, product_key FROM orders
        WHERE order_timestamp > $start AND order_timestamp <= $end
    """, params)
    if tuning.exclude_purchased:
        run(con, """
            DELETE FROM ranking_truth AS t WHERE EXISTS (
                SELECT 1 FROM orders AS o
                WHERE o.customer_key = t.customer_key AND o.product_key = t.product_key AND o.order_timestamp <= $start
            )
        """, {"start": train_as_of})
    candidates = con.sql(f"""
        SELECT {number}::BIGINT * {QUERY_SPAN} + f.customer_key AS query, f.customer_key, {', '.join(f'f.{name}' for name in FEATURES)},
               (t.product_key IS NOT NULL)::INTEGER AS label
        FROM {FEATURES_STAGE} AS f
        LEFT JOIN ranking_truth AS t USING (customer_key, product_key)
        WHERE f.customer_key IN (SELECT customer_key FROM ranking_truth)
        ORDER BY f.customer_key, f.blend_rank
    """).df()
    truth = con.sql(
        f"SELECT {number}::BIGINT * {QUERY_SPAN} + customer_key AS query, count(*) AS n FROM ranking_truth GROUP BY ALL"
    ).df()
    return candidates, truth.set_index("query").n


def held_out(customer_keys: np.ndarray, share: float) -> np.ndarray:
    """A stable pseudo-random `share` of the customers (by key)."""
    mixed = (customer_keys.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(1 << 32)
    return mixed < np.uint64(int(share * (1 << 32)))


def fit(candidates: pd.DataFrame, truth: pd.Series, tuning: Tuning) -> Fitted:
    """Fit the ranker on the candidates of the customers not held out; promote it if it beats the blend's order on
    the held-out ones by the margin."""
    import lightgbm  # imported when training: the other stages never need it

    if candidates.empty or candidates.label.sum() == 0:
        return unfitted("no candidate was ordered in the training window")
    holdout = held_out(candidates.customer_key.to_numpy(), tuning.ranking_holdout_share)
    train, test = candidates[~holdout], candidates[holdout]
    if train.label.sum() == 0 or test.empty:
        return unfitted("too few customers ordered in the training window to train and judge a model")
    params = {
        "objective": tuning.ranking_objective, "metric": "ndcg", "eval_at": [K], "lambdarank_truncation_level": K,
        "learning_rate": tuning.ranking_learning_rate, "num_leaves": tuning.ranking_leaves,
        "min_data_in_leaf": tuning.ranking_min_leaf, "feature_fraction": 0.9, "num_threads": 2,
        "deterministic": True, "force_row_wise": True, "seed": 0, "verbose": -1,
    }
    booster = _train(lightgbm, params, train, tuning.ranking_trees)
    model_scores = booster.predict(test[list(FEATURES)].to_numpy(np.float32), num_threads=2)
    ndcg_model = mean_ndcg(test, model_scores, truth)
    ndcg_blend = mean_ndcg(test, -test.blend_rank.to_numpy(np.float64), truth)
    promoted = ndcg_model >= ndcg_blend * (1 + tuning.ranking_promotion_margin) and ndcg_model > 0
    reason = (
        f"held-out NDCG@{K} {ndcg_model:.4f} against the blend's {ndcg_blend:.4f}: "
        + ("promoted" if promoted else f"not promoted (needs {1 + tuning.ranking_promotion_margin:.3f} x the blend's)")
    )
    if promoted:  # judged on the held-out customers; what is served learns from every customer of the window
        booster = _train(lightgbm, params, candidates, tuning.ranking_trees)
    gains = booster.feature_importance(importance_type="gain")
    total = float(gains.sum()) or 1.0
    return Fitted(
        model=booster.model_to_string(), promoted=bool(promoted), reason=reason,
        train_customers=int(train["query"].nunique()), holdout_customers=int(test["query"].nunique()),
        holdout_ndcg_model=round(float(ndcg_model), 6), holdout_ndcg_blend=round(float(ndcg_blend), 6),
        importances={name: round(float(g) / total, 6) for name, g in zip(FEATURES, gains)},
    )


def _train(lightgbm, params: dict, candidates: pd.DataFrame, trees: int):
    data = lightgbm.Dataset(
        candidates[list(FEATURES)].to_numpy(np.float32), label=candidates.label.to_numpy(),
        group=candidates.groupby("query", sort=False).size().to_numpy(), feature_name=list(FEATURES),
    )
    return lightgbm.train(params, data, num_boost_round=trees)


def mean_ndcg(candidates: pd.DataFrame, scores: np.ndarray, truth: pd.Series) -> float:
    """Mean NDCG@K over the customers of `candidates` when each customer's candidates are ordered by `scores`
    (desc; ties by the blend's rank), binary relevance, the ideal from every product the customer ordered."""
    frame = pd.DataFrame({
        "query": candidates["query"].to_numpy(), "label": candidates.label.to_numpy(),
        "score": scores, "rank": candidates.blend_rank.to_numpy(),
    }).sort_values(["query", "score", "rank"], ascending=[True, False, True], kind="stable")
    frame["position"] = frame.groupby("query").cumcount() + 1
    top = frame[frame.position <= K]
    dcg = (top.label / np.log2(top.position + 1)).groupby(top["query"]).sum()
    discounts = np.cumsum(1 / np.log2(np.arange(2, K + 2)))
    customers = frame["query"].unique()
    ideal = discounts[np.minimum(truth.reindex(customers).fillna(0).to_numpy(np.int64), K) - 1]
    return float(np.mean(dcg.reindex(customers).fillna(0).to_numpy() / ideal))


def unfitted(reason: str) -> Fitted:
    return Fitted("", False, reason, 0, 0, 0.0, 0.0, {})


# ---- application -------------------------------------------------------------------------------------------
def learned_recommendations(con: duckdb.DuckDBPyConnection, tuning: Tuning) -> str:
    """The compute of `learned_recommendations`: the promoted model's rank and score of the blend's candidates,
    or no rows (the top N then takes the blend's order)."""
    columns = "customer_key, product_key, recommendation_rank, recommendation_score"
    found = run(con, f"SELECT model, promoted FROM {MODEL} LIMIT 1")
    if not (tuning.learned_ranking and found and found[0][1] and found[0][0]):
        return f"SELECT {columns} FROM product_recommendations WHERE false"
    import lightgbm

    booster = lightgbm.Booster(model_str=found[0][0])
    reader = con.sql(
        f"SELECT customer_key, product_key, {', '.join(FEATURES)} FROM {FEATURES_STAGE}"
    ).to_arrow_reader(PREDICT_ROWS)
    parts = []
    for batch in reader:
        matrix = np.column_stack([batch.column(name).to_numpy(zero_copy_only=False) for name in FEATURES])
        scores = booster.predict(matrix.astype(np.float32), num_threads=2)
        parts.append(pa.table({"customer_key": batch.column("customer_key"),
                               "product_key": batch.column("product_key"), "learned_score": scores}))
    learned = pa.concat_tables(parts) if parts else pa.table({
        "customer_key": pa.array([], pa.int32()), "product_key": pa.array([], pa.int32()),
        "learned_score": pa.array([], pa.float64())})
    con.register("learned_scores", learned)
    return f"""
        SELECT {columns} FROM (
            SELECT r.customer_key, r.product_key,
                   row_number() OVER (PARTITION BY r.customer_key
                                      ORDER BY l.learned_score DESC NULLS LAST, r.recommendation_rank)
                       AS recommendation_rank,
                   coalesce(round(1 / (1 + exp(-l.learned_score)), 9), 0.0) AS recommendation_score
            FROM product_recommendations AS r
            LEFT JOIN learned_scores AS l USING (customer_key, product_key)  -- a candidate without features: last
        )
        ORDER BY customer_key, recommendation_rank
    """
