"""Attribution: which purchases the served recommendations led to, and an A/B readout per experiment.

A purchase is attributed to a recommendation in two ways:

- **reported**: a `purchase` feedback row (`record_feedback(..., "purchase", recommendation_id=..., revenue=...)`)
  counts as it is, with or without an order;
- **ordered**: an order line of the warehouse's `orders` goes to the customer's **last click** on the same product
  at most `attribution_window_hours` before it (a click after the order, or longer before, does not count).

An order line is not counted again when it is the nearest order line (within `purchase_match_hours`, either
side) of a reported purchase of the same customer and product: the reported row stands for it, and takes the
line's value when it reports no revenue. A purchase is counted once however often it is reported: again for the
same answer (a client's retry) it is the first report's; from a second answer, the order line it shares with the
first goes to the report nearest to it (then the first reported). A purchase's revenue is the reported `revenue`, else the order line's
`line_value` (quantity × unit price, data_contract.md).

The unit of a purchase is one product bought from one answer (customer, product, recommendation_id): several
order lines of a product after one click are one purchase with their summed revenue. So the purchases that
follow clicks never outnumber the clicks, and conversion (purchases / clicks) is a proportion; only reported
purchases of a product the customer never clicked can push it above 1 (then no interval is given for it).

Counted per placement, per A/B variant and per recommendation type: impressions, clicks, purchases, revenue,
CTR (clicks / impressions), conversion (purchases / clicks) and purchases per impression. The A/B readout groups
the feedback by experiment (the salt of the publication whose version the customer was shown) and compares each
variant with the experiment's control, its first variant (`lib/variants.py`), see `difference_interval`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import pandas as pd
from sqlalchemy import and_, func, literal, select

from recopipeline.serving.database import ServingDatabase
from recopipeline.serving.feedback import UNKNOWN
from recopipeline.serving.schema import publications, recommendation_feedback, serving_state

Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile: a two-sided 95 % interval
DIMENSIONS = ("placement", "variant", "recommendation_type")
AB = "ab"  # the dimension of the A/B readout's rows
PLACEMENT_LOOKBACK = timedelta(days=1)  # a click's answer was shown at most this long before the window starts
COLUMNS = [
    "dimension", "value", "experiment", "control", "impressions", "clicks", "purchases", "revenue", "ctr",
    "conversion", "purchases_per_impression", "ctr_diff", "ctr_diff_low", "ctr_diff_high", "conversion_diff",
    "conversion_diff_low", "conversion_diff_high",
]
TOUCH_TYPES = {
    "feedback_id": "int64", "event": "string", "customer_id": "string", "product_id": "string",
    "variant": "string", "recommendation_type": "string", "version": "Int64", "recommendation_id": "string",
    "placement": "string", "revenue": "Float64", "recorded_at": "datetime64[us]",
}
SHOWN_TYPES = {
    "placement": "string", "variant": "string", "recommendation_type": "string", "version": "Int64",
    "impressions": "int64",
}

ATTRIBUTED_PURCHASES = """
-- touches: the window's clicks and reported purchases; orders: the warehouse's order lines
WITH clicks AS (SELECT * FROM touches WHERE event = 'click'),
reported AS (  -- one per answer and product: the same purchase reported again for its answer is a retry
    SELECT * FROM touches WHERE event = 'purchase'
    QUALIFY row_number() OVER (
        PARTITION BY customer_id, product_id, coalesce(recommendation_id, 'feedback-' || feedback_id)
        ORDER BY feedback_id) = 1
),
pairs AS (SELECT DISTINCT customer_id, product_id FROM touches),
lines AS (  -- the order lines of every customer and product clicked or reported bought, from the window's start
    SELECT o.order_id, o.customer_id, o.product_id, o.order_timestamp, o.line_value
    FROM orders AS o
    SEMI JOIN pairs AS p ON p.customer_id = o.customer_id AND p.product_id = o.product_id
    WHERE o.order_timestamp >= (SELECT min(recorded_at) FROM touches) - to_hours($match_hours)
),
nearest AS (  -- the nearest order line of each reported purchase, within purchase_match_hours either side
    SELECT r.feedback_id, l.order_id, l.product_id, l.line_value,
           abs(epoch(l.order_timestamp) - epoch(r.recorded_at)) AS distance
    FROM reported AS r
    JOIN lines AS l ON l.customer_id = r.customer_id AND l.product_id = r.product_id
        AND abs(epoch(l.order_timestamp) - epoch(r.recorded_at)) <= $match_hours * 3600
    QUALIFY row_number() OVER (PARTITION BY r.feedback_id ORDER BY distance, l.order_id) = 1
),
covered AS (  -- an order line stands for one reported purchase: the nearest, then the first reported
    SELECT * FROM nearest
    QUALIFY row_number() OVER (PARTITION BY order_id, product_id ORDER BY distance, feedback_id) = 1
),
reported_again AS (  -- a purchase reported from a second answer: its order line stands for the first already
    SELECT feedback_id FROM nearest ANTI JOIN covered USING (feedback_id)
),
ordered AS (  -- every other line goes to the last click on its product before it, within the attribution window
    SELECT c.*, l.line_value
    FROM lines AS l
    JOIN clicks AS c ON c.customer_id = l.customer_id AND c.product_id = l.product_id
        AND c.recorded_at <= l.order_timestamp AND l.order_timestamp <= c.recorded_at + to_hours($window_hours)
    ANTI JOIN covered AS v ON v.order_id = l.order_id AND v.product_id = l.product_id
    QUALIFY row_number() OVER (
        PARTITION BY l.order_id, l.product_id ORDER BY c.recorded_at DESC, c.feedback_id DESC) = 1
),
units AS (
    SELECT r.*, coalesce(r.revenue, v.line_value, 0) AS value, 1 AS reported
    FROM reported AS r LEFT JOIN covered AS v USING (feedback_id)
    WHERE r.feedback_id NOT IN (SELECT feedback_id FROM reported_again)
    UNION ALL BY NAME
    SELECT *, line_value AS value, 0 AS reported FROM ordered
)
SELECT customer_id, product_id, coalesce(recommendation_id, 'feedback-' || feedback_id) AS answer,
       min(placement) AS placement, min(variant) AS variant, min(recommendation_type) AS recommendation_type,
       min(version) AS version, sum(reported)::INTEGER AS reported, (count(*) - sum(reported))::INTEGER AS order_lines,
       sum(value)::DOUBLE AS revenue
FROM units
GROUP BY customer_id, product_id, answer
ORDER BY customer_id, product_id, answer
"""


@dataclass(frozen=True)
class Feedback:
    """The window's feedback: impressions counted per group, clicks and reported purchases one row each."""

    shown: pd.DataFrame  # placement, variant, recommendation_type, version, impressions
    touches: pd.DataFrame  # TOUCH_TYPES: the clicks and purchases
    experiments: dict[int, tuple[str, list[str]]]  # version -> (salt, variant names, the control first)
    live_version: int | None


@dataclass(frozen=True)
class Interval:
    difference: float
    low: float
    high: float


def read_feedback(db: ServingDatabase, since: datetime) -> Feedback:
    """The feedback recorded since `since`; a click or purchase without a placement takes its answer's."""
    fb = recommendation_feedback
    in_window = fb.c.recorded_at >= since
    pending = select(fb.c.recommendation_id).where(
        in_window, fb.c.event != "impression", fb.c.placement.is_(None), fb.c.recommendation_id.is_not(None)
    )
    answers = (
        select(fb.c.recommendation_id, func.max(fb.c.placement).label("placement"))
        .where(fb.c.event == "impression", fb.c.recorded_at >= since - PLACEMENT_LOOKBACK,
               fb.c.recommendation_id.in_(pending))
        .group_by(fb.c.recommendation_id)
        .subquery()
    )
    placement = func.coalesce(fb.c.placement, literal(UNKNOWN))
    shown_query = (
        select(placement.label("placement"), fb.c.variant, fb.c.recommendation_type, fb.c.version,
               func.count().label("impressions"))
        .where(in_window, fb.c.event == "impression")
        .group_by(placement, fb.c.variant, fb.c.recommendation_type, fb.c.version)
    )
    touches_query = (
        select(fb.c.feedback_id, fb.c.event, fb.c.customer_id, fb.c.product_id, fb.c.variant,
               fb.c.recommendation_type, fb.c.version, fb.c.recommendation_id,
               func.coalesce(fb.c.placement, answers.c.placement, literal(UNKNOWN)).label("placement"),
               fb.c.revenue, fb.c.recorded_at)
        .select_from(fb.outerjoin(answers, answers.c.recommendation_id == fb.c.recommendation_id))
        .where(in_window, fb.c.event.in_(("click", "purchase")))
        .order_by(fb.c.feedback_id)
    )
    with db.engine.connect() as conn:
        shown = conn.execute(shown_query).all()
        touches = conn.execute(touches_query).all()
        specs = conn.execute(
            select(publications.c.publication_id, publications.c.experiment)
            .where(and_(publications.c.kind == "full", publications.c.experiment.is_not(None)))
        ).all()
        live = conn.execute(select(serving_state.c.current_version).where(serving_state.c.id == 1)).scalar()
    experiments = {}
    for version, spec in specs:
        record = json.loads(spec)
        experiments[int(version)] = (record["salt"], list(record["variants"]))
    return Feedback(
        shown=_typed(pd.DataFrame([tuple(r) for r in shown], columns=list(SHOWN_TYPES)), SHOWN_TYPES),
        touches=_typed(pd.DataFrame([tuple(r) for r in touches], columns=list(TOUCH_TYPES)), TOUCH_TYPES),
        experiments=experiments,
        live_version=live,
    )


def attributed_purchases(
    con: duckdb.DuckDBPyConnection, touches: pd.DataFrame, window_hours: int, match_hours: int
) -> pd.DataFrame:
    """One row per purchase (customer, product, answer) with the group it counts in and its revenue.

    `con` must have the warehouse's `orders` as a table or view (order_id, customer_id, product_id,
    order_timestamp, line_value).
    """
    con.register("touches", _typed(touches, TOUCH_TYPES))
    try:
        return con.execute(ATTRIBUTED_PURCHASES, {"window_hours": window_hours, "match_hours": match_hours}).df()
    finally:
        con.unregister("touches")


def attribution_table(feedback: Feedback, purchases: pd.DataFrame) -> pd.DataFrame:
    """The rows of `recommendation_attribution`: one per placement, variant and type, then the A/B readout."""
    shown, clicks = feedback.shown, feedback.touches[feedback.touches.event == "click"]
    rows = []
    for dimension in DIMENSIONS:
        counts = _counts(shown, clicks, purchases, [dimension])
        for value, row in counts.iterrows():
            rows.append({"dimension": dimension, "value": value, **_rates(row)})
    salt_of = {version: salt for version, (salt, _) in feedback.experiments.items()}
    tagged = [frame.assign(experiment=frame.version.map(salt_of)) for frame in (shown, clicks, purchases)]
    for salt, names in _experiments(feedback):
        parts = [frame[frame.experiment == salt] for frame in tagged]
        counts = _counts(*parts, ["variant"]).reindex(names, fill_value=0)
        control = counts.loc[names[0]]
        for name in names:
            row = counts.loc[name]
            ab = {"dimension": AB, "value": name, "experiment": salt, "control": names[0], **_rates(row)}
            if name != names[0]:
                for metric, (hits, trials) in {"ctr": ("clicks", "impressions"),
                                                "conversion": ("purchases", "clicks")}.items():
                    interval = difference_interval(int(row[hits]), int(row[trials]),
                                                   int(control[hits]), int(control[trials]))
                    if interval:
                        ab |= {f"{metric}_diff": interval.difference, f"{metric}_diff_low": interval.low,
                               f"{metric}_diff_high": interval.high}
            rows.append(ab)
    table = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("impressions", "clicks", "purchases"):
        table[column] = table[column].astype("int64")
    for column in COLUMNS[7:]:
        table[column] = table[column].astype("Float64")
    for column in COLUMNS[:4]:
        table[column] = table[column].astype("string")
    return table


def live_experiment(feedback: Feedback) -> str | None:
    """The salt of the experiment the live version serves (whose readout goes into the asset's metadata)."""
    found = feedback.experiments.get(feedback.live_version) if feedback.live_version is not None else None
    return found[0] if found else None


def difference_interval(hits: int, trials: int, control_hits: int, control_trials: int,
                        z: float = Z_95) -> Interval | None:
    """The difference of two proportions (variant − control) with Newcombe's hybrid score interval.

    Newcombe (1998, "Interval estimation for the difference between independent proportions", method 10): each
    proportion gets its Wilson score interval (l, u), and the difference d = p1 − p2 the interval
    [d − √((p1 − l1)² + (u2 − p2)²), d + √((u1 − p1)² + (p2 − l2)²)]. Chosen over the two-proportion Wald
    interval d ± z·√(p1(1−p1)/n1 + p2(1−p2)/n2) because click-through and conversion rates are small (a few per
    cent) and purchases are few: there Wald's coverage falls well below 95 %, its interval collapses to a point
    when a side has no hits and it can leave [−1, 1]; Newcombe's stays close to 95 % at such rates, never leaves
    [−1, 1] and is closed-form. None when a side has no trials or more hits than trials.
    """
    if trials <= 0 or control_trials <= 0 or not 0 <= hits <= trials or not 0 <= control_hits <= control_trials:
        return None
    p1, p2 = hits / trials, control_hits / control_trials
    l1, u1 = wilson_interval(hits, trials, z)
    l2, u2 = wilson_interval(control_hits, control_trials, z)
    d = p1 - p2
    return Interval(d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def wilson_interval(hits: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson's score interval of the proportion hits / trials."""
    centre = (hits + z * z / 2) / (trials + z * z)
    half = z * math.sqrt(hits * (trials - hits) / trials + z * z / 4) / (trials + z * z)
    return max(0.0, centre - half), min(1.0, centre + half)


def _counts(shown: pd.DataFrame, clicks: pd.DataFrame, purchases: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    frame = pd.concat(
        {
            "impressions": shown.groupby(keys).impressions.sum(),
            "clicks": clicks.groupby(keys).size(),
            "purchases": purchases.groupby(keys).size(),
            "revenue": purchases.groupby(keys).revenue.sum(),
        },
        axis=1,
    )
    frame = frame.reindex(columns=["impressions", "clicks", "purchases", "revenue"]).fillna(0)
    if len(keys) == 1:
        frame.index = frame.index.get_level_values(0)
    return frame.sort_index()


def _rates(row: pd.Series) -> dict:
    impressions, clicks, purchases = int(row.impressions), int(row.clicks), int(row.purchases)
    return {
        "impressions": impressions, "clicks": clicks, "purchases": purchases, "revenue": float(row.revenue),
        "ctr": clicks / impressions if impressions else None,
        "conversion": purchases / clicks if clicks else None,
        "purchases_per_impression": purchases / impressions if impressions else None,
    }


def _experiments(feedback: Feedback) -> list[tuple[str, list[str]]]:
    """Each experiment (salt) the window's feedback was shown under, with the variants of its newest version."""
    versions = set(feedback.shown.version.dropna()) | set(feedback.touches.version.dropna())
    newest: dict[str, tuple[int, list[str]]] = {}
    for version in sorted(int(v) for v in versions if int(v) in feedback.experiments):
        salt, names = feedback.experiments[version]
        newest[salt] = (version, names)
    return [(salt, names) for salt, (_, names) in sorted(newest.items())]


def _typed(frame: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    return frame.reindex(columns=list(types)).astype(types)
