"""Every tuning value of the pipeline, in one typed place with documented defaults.

`docs/configuration.md` explains each value and where it differs from the tutorial. The Dagster resource
`TuningResource` exposes the same fields so a run can override them from the launchpad.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

STRATEGIES = ("affinity_similar", "collaborative", "complementary", "category_preference", "repurchase", "popular")


@dataclass(frozen=True)
class Tuning:
    # --- affinity (customer_product_affinity) ---
    weight_purchase: float = 10.0
    weight_cart_add: float = 5.0
    weight_click: float = 3.0
    weight_view: float = 1.0
    weight_cart_remove: float = 0.0
    recency_mode: str = "steps"  # "steps" (tutorial) or "exponential"
    recency_half_life_days: float = 14.0  # used when recency_mode = "exponential"
    high_affinity_above: float = 50.0
    medium_affinity_above: float = 20.0
    low_affinity_above: float = 5.0
    # --- customer segments ---
    new_customer_days: int = 30
    at_risk_after_days: int = 60
    vip_min_orders: int = 5
    vip_window_days: int = 365
    # --- product similarity ---
    similarity_threshold: float = 0.5
    similarity_top_k: int = 50
    price_band: float = 0.2
    # --- bought together / complementary ---
    min_support: int = 5
    max_basket_lines: int = 100
    complementary_top_k: int = 20
    # --- collaborative (item-to-item over affinities) ---
    cf_items_per_customer: int = 20
    cf_top_k: int = 20
    cf_min_common_customers: int = 2
    # --- candidate generation ---
    seeds_per_customer: int = 10
    neighbours_per_seed: int = 20
    category_top_n: int = 3
    category_products: int = 20
    popular_window_days: int = 30
    popular_products: int = 50
    # --- blend (product_recommendations) ---
    weight_affinity_similar: float = 1.0
    weight_collaborative: float = 1.0
    weight_complementary: float = 1.0
    weight_category_preference: float = 0.6
    weight_repurchase: float = 0.0  # the "buy it again" strategy; > 0 switches it on
    weight_popular: float = 0.1  # cold-start fallback; keeps every customer served
    exclude_purchased: bool = True
    candidates_per_customer: int = 100
    top_n: int = 20

    def strategy_weights(self) -> dict[str, float]:
        """Blend weight per strategy, in priority order (the first wins a tie for recommendation_type)."""
        return {s: getattr(self, f"weight_{s}") for s in STRATEGIES}

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Tuning":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown tuning values: {', '.join(sorted(unknown))}")
        return cls(**values)

    def __post_init__(self) -> None:
        if self.recency_mode not in ("steps", "exponential"):
            raise ValueError("recency_mode must be 'steps' or 'exponential'")
        if not 1 <= self.top_n <= self.candidates_per_customer:
            raise ValueError("top_n must be between 1 and candidates_per_customer")
        if any(w < 0 for w in self.strategy_weights().values()):
            raise ValueError("strategy weights must be >= 0")
        if sum(self.strategy_weights().values()) <= 0:
            raise ValueError("at least one strategy weight must be > 0")
        if self.weight_repurchase > 0 and self.exclude_purchased:
            raise ValueError("the repurchase strategy needs exclude_purchased = false")
        if self.similarity_threshold <= 0.42:
            raise ValueError("similarity_threshold must be > 0.42 so that similar products share a category")


DEFAULT_TUNING = Tuning()
