"""One product of an answer, as the read API ranks, blends and filters them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    product_id: str
    product_name: str
    recommendation_type: str
    score: float
    evidence: str | None
