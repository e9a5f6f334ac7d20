"""Feedback on served recommendations: impressions, clicks and purchases, click-through rates, and clicks as
interactions.

Each feedback row names the variant, recommendation type and placement the customer was shown, so the
click-through rate can be compared per A/B variant and per strategy. Clicks become `click` events of
`customer_interactions` (see `click_events`), so they feed the next affinity computation. Purchases (with the
revenue the shop reports) are attributed to their answer by `serving/attribution.py`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

import pandas as pd
from sqlalchemy import Integer, case, cast, func, insert, select, true
from sqlalchemy.exc import IntegrityError

from recopipeline.lib.contract import HOME
from recopipeline.lib.variants import Experiment
from recopipeline.serving.database import ServingDatabase, ServingError, utcnow
from recopipeline.serving.read import check_id
from recopipeline.serving.schema import (
    FEEDBACK_EVENTS,
    customer_recommendations,
    publications,
    recommendation_feedback,
    serving_state,
)

UNKNOWN = "unknown"


def record_feedback(
    db: ServingDatabase,
    customer_id: str,
    product_id: str,
    event: str = "click",
    *,
    variant: str | None = None,
    recommendation_type: str | None = None,
    rank: int | None = None,
    version: int | None = None,
    at: datetime | None = None,
    recommendation_id: str | None = None,
    revenue: float | None = None,
    placement: str | None = None,
) -> dict:
    """Record one impression, click or purchase. Variant and type, when not given, are taken from the live rows;
    `recommendation_id` is the id of the answer that showed the product, `placement` where it was shown (the
    answer's `placement`; when not given the attribution takes it from the answer's impressions) and `revenue`
    what a purchase was worth (purchases only, >= 0)."""
    _check_event(event, customer_id, product_id, rank)
    if recommendation_id is not None:
        check_id("recommendation_id", recommendation_id)
    if placement is not None:
        check_id("placement", placement)
    if revenue is not None:
        if event != "purchase":
            raise ValueError(f"revenue is recorded with purchase events only, not with {event!r}")
        if isinstance(revenue, bool) or not isinstance(revenue, (int, float)) or not math.isfinite(revenue) \
                or revenue < 0:
            raise ValueError(f"revenue must be a finite number >= 0, got {revenue!r}")
        revenue = float(revenue)
    with db.engine.connect() as conn:
        if recommendation_id is not None and None in (variant, recommendation_type, version, placement, rank):
            shown = _shown(conn, recommendation_id, product_id)  # the answer's impression says how it was shown
            if shown is not None:
                variant, recommendation_type = variant or shown.variant, recommendation_type or shown.recommendation_type
                version = version if version is not None else shown.version
                placement, rank = placement or shown.placement, rank if rank is not None else shown.rank
        if variant is None or recommendation_type is None or version is None:
            found_variant, found_type, found_version = _served(conn, customer_id, product_id)
            variant = variant or found_variant
            recommendation_type = recommendation_type or found_type
            version = version if version is not None else found_version
        row = {
            "event": event, "customer_id": customer_id, "product_id": product_id, "variant": variant or UNKNOWN,
            "recommendation_type": recommendation_type or UNKNOWN, "version": version, "rank": rank,
            "recorded_at": at or utcnow(), "recommendation_id": recommendation_id, "revenue": revenue,
            "placement": placement,
        }
        try:
            conn.execute(insert(recommendation_feedback), [row])
        except IntegrityError:
            if event != "purchase":  # every other value is checked above: a constraint the database should not have
                raise
            raise ServingError(  # a database from before purchases, opened by a role that may not upgrade it
                "this serving database does not accept purchase feedback yet: its owner upgrades it when it next "
                "opens it (a run of the pipeline)"
            ) from None
        conn.commit()
    return row


def record_impressions(db: ServingDatabase, answer: Mapping, at: datetime | None = None) -> int:
    """One impression per recommendation of a `get_product_recommendations` answer, in the answer's placement."""
    rows = [
        {
            "event": "impression", "customer_id": answer["customer_id"], "product_id": item["product_id"],
            "variant": answer["variant"], "recommendation_type": item["recommendation_type"],
            "version": answer["version"], "rank": item["rank"], "recorded_at": at or utcnow(),
            "recommendation_id": answer.get("recommendation_id"),
            "placement": answer.get("placement", HOME),  # an answer that names none is home's
        }
        for item in answer["recommendations"]
    ]
    if rows:
        with db.engine.begin() as conn:
            conn.execute(insert(recommendation_feedback), rows)
    return len(rows)


def _check_event(event: str, customer_id, product_id, rank) -> None:
    if event not in FEEDBACK_EVENTS:
        raise ValueError(f"event must be one of {', '.join(FEEDBACK_EVENTS)}, got {event!r}")
    check_id("customer_id", customer_id)
    check_id("product_id", product_id)
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"rank must be a positive integer, got {rank!r}")


def _shown(conn, recommendation_id: str, product_id: str):
    """The impression of the product in the answer `recommendation_id`, if it was recorded."""
    fb = recommendation_feedback
    return conn.execute(
        select(fb.c.variant, fb.c.recommendation_type, fb.c.version, fb.c.placement, fb.c.rank)
        .where(fb.c.recommendation_id == recommendation_id, fb.c.product_id == product_id, fb.c.event == "impression")
        .limit(1)
    ).first()


def _served(conn, customer_id: str, product_id: str) -> tuple[str | None, str | None, int | None]:
    """The variant and type under which the live version serves this product to this customer."""
    state = conn.execute(select(serving_state.c.current_version).where(serving_state.c.id == 1)).scalar()
    if state is None:
        return None, None, None
    cr = customer_recommendations
    row = conn.execute(
        select(cr.c.variant, cr.c.recommendation_type).where(
            cr.c.version == state, cr.c.customer_id == customer_id, cr.c.product_id == product_id
        )
    ).first()
    if row:
        return row.variant, row.recommendation_type, state
    spec = conn.execute(select(publications.c.experiment).where(publications.c.publication_id == state)).scalar()
    variant = Experiment.from_json(spec).assign(customer_id) if spec else None
    return variant, None, state


def click_through_rates(db: ServingDatabase, since: datetime | None = None) -> pd.DataFrame:
    """Impressions, clicks and CTR per variant and per recommendation type (dimension, value, ...)."""
    fb = recommendation_feedback
    clicks = func.sum(cast(case((fb.c.event == "click", 1), else_=0), Integer))
    impressions = func.sum(cast(case((fb.c.event == "impression", 1), else_=0), Integer))
    window = fb.c.recorded_at >= since if since else true()
    frames = []
    with db.engine.connect() as conn:
        for dimension, column in (("variant", fb.c.variant), ("recommendation_type", fb.c.recommendation_type)):
            rows = conn.execute(
                select(column.label("value"), impressions.label("impressions"), clicks.label("clicks"))
                .where(window)
                .group_by(column)
                .order_by(column)
            ).all()
            frames.append(pd.DataFrame([(dimension, *r) for r in rows],
                                       columns=["dimension", "value", "impressions", "clicks"]))
    result = pd.concat(frames, ignore_index=True)
    result["impressions"] = result["impressions"].astype("int64")
    result["clicks"] = result["clicks"].astype("int64")
    result["ctr"] = pd.array([c / i if i else None for c, i in zip(result.clicks, result.impressions)], dtype="Float64")
    return result


def click_events(db: ServingDatabase, after_id: int = 0) -> pd.DataFrame:
    """Recorded clicks as `customer_interactions` rows (the data contract's columns and types)."""
    fb = recommendation_feedback
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(fb.c.feedback_id, fb.c.customer_id, fb.c.product_id, fb.c.recorded_at)
            .where(fb.c.event == "click", fb.c.feedback_id > after_id)
            .order_by(fb.c.feedback_id)
        ).all()
    return pd.DataFrame(
        {
            "event_id": [f"feedback-{r.feedback_id}" for r in rows],
            "customer_id": [r.customer_id for r in rows],
            "product_id": [r.product_id for r in rows],
            "interaction_type": ["click"] * len(rows),
            "interaction_timestamp": pd.to_datetime([r.recorded_at for r in rows]).astype("datetime64[us]"),
            "session_id": pd.Series([None] * len(rows), dtype="string"),
        }
    )

