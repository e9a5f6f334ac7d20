"""Serving: the published recommendations in SQLite or Postgres, the read API and feedback.

`get_product_recommendations` and `record_feedback` use the serving database that `RECOPIPELINE_SERVING_URL`
names (see docs/serving.md); build a `Recommender` over a `ServingDatabase` to choose another.
"""

from __future__ import annotations

import threading

from recopipeline.lib import settings
from recopipeline.serving.database import ServingDatabase, ServingError
from recopipeline.serving.feedback import click_events, click_through_rates, record_impressions
from recopipeline.serving.feedback import record_feedback as record_feedback_in
from recopipeline.serving.publish import (
    Expected,
    Publication,
    PublishError,
    history,
    publish,
    publish_customers,
    rollback,
)
from recopipeline.serving.read import RECOMMENDATION_TYPES, NotPublishedError, Recommender
from recopipeline.serving.schema import COLD_START

__all__ = [
    "COLD_START", "RECOMMENDATION_TYPES", "Expected", "NotPublishedError", "Publication", "PublishError",
    "Recommender", "ServingDatabase", "ServingError", "click_events", "click_through_rates", "default_recommender",
    "get_product_recommendations", "get_trending_products", "history", "publish", "publish_customers", "record_feedback",
    "record_impressions", "rollback",
]

_default: Recommender | None = None
_default_lock = threading.Lock()


def default_recommender() -> Recommender:
    """The process-wide recommender over the configured serving database (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            database = ServingDatabase(settings.serving_url(), schema=settings.serving_schema())
            _default = Recommender(database, cache_ttl=settings.serving_cache_seconds())
        return _default


def get_product_recommendations(
    customer_id: str, product_id: str | None = None, limit: int = 10, recommendation_type: str = "all",
    cart: list[str] | None = None,
) -> dict:
    """A customer's recommendations (limit 1-50; type `all` or one strategy of `RECOMMENDATION_TYPES`), blended
    with the viewed product's when `product_id` is given, and with what goes with the cart's products when `cart`
    lists them.

    An unknown customer gets the cold-start list (`cold_start` is true); invalid arguments raise ValueError.
    """
    return default_recommender().recommend(customer_id, product_id, limit, recommendation_type, cart)


def get_trending_products(customer_id: str | None = None, limit: int = 10) -> list[dict]:
    """The trending list (limit 1-50), of the customer's A/B variant when `customer_id` is given."""
    return default_recommender().trending(customer_id, limit)


def record_feedback(customer_id: str, product_id: str, event: str = "click", **details) -> dict:
    """Record an impression or a click on a recommendation (variant and type default to the served ones)."""
    return record_feedback_in(default_recommender().db, customer_id, product_id, event, **details)
