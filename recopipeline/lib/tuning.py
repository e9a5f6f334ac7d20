"""Every tuning value of the pipeline, in one typed place with documented defaults.

`docs/configuration.md` explains each value and where it differs from the tutorial. The Dagster resource
`TuningResource` exposes the same fields so a run can override them from the launchpad.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from recopipeline.lib.variants import DEFAULT_VARIANTS, Experiment

STRATEGIES = (
    "affinity_similar", "collaborative", "ease", "complementary", "category_preference", "repurchase", "popular",
    "trending",
)


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
    # --- EASE (closed-form item-item model over purchases; docs/evaluation.md) ---
    ease_l2: float = 500.0  # L2 penalty λ
    ease_max_items: int = 5_000  # the most-bought products that enter the model (n³ time, n² memory)
    ease_top_k: int = 20  # positive weights kept per product
    # --- candidate generation ---
    seeds_per_customer: int = 10
    neighbours_per_seed: int = 20
    category_top_n: int = 3
    category_products: int = 20
    popular_window_days: int = 30
    popular_products: int = 50
    # --- trending (product_trending: the last 24 h against the 7 days before) ---
    trending_prior: float = 10.0  # interest added to both sides of the growth ratio, so tiny counts don't win
    trending_products: int = 50  # the length of the trending list
    # --- blend (product_recommendations) ---
    weight_affinity_similar: float = 1.0
    weight_collaborative: float = 1.0
    weight_ease: float = 10.0  # the offline evaluation's winner on real data (docs/evaluation.md)
    weight_complementary: float = 1.0
    weight_category_preference: float = 0.6
    weight_repurchase: float = 0.0  # the "buy it again" strategy; > 0 switches it on
    repurchase_half_life_days: float = 180.0  # an order of the product counts half after this many days
    repurchase_rate_power: float = 0.25  # how much a product's repeat-buyer rate counts (product_repurchase_rates)
    repurchase_trend_days: int = 14  # the window of a product's recent sales trend
    repurchase_trend_weight: float = 2.0  # how much the recent sales trend lifts a product's repurchase score
    weight_popular: float = 0.1  # cold-start fallback; keeps every customer served
    weight_trending: float = 0.0  # the trending list (product_trending) for everyone; off (docs/evaluation.md)
    exclude_purchased: bool = True
    candidates_per_customer: int = 100
    top_n: int = 20
    # --- diversity in the top N (customer_top_recommendations; 0 = no cap; docs/evaluation.md) ---
    diversity_max_per_category: int = 0  # at most this many of one category before the rest of the list
    diversity_max_per_brand: int = 0  # at most this many of one brand (a product without a brand has none)
    # --- learned ranking (ranking_model, learned_recommendations; lib/ranking.py, docs/evaluation.md) ---
    learned_ranking: bool = False  # rank the candidates by the learned model when it is promoted (off: see docs)
    ranking_window_days: int = 60  # the model learns what customers ordered in this window before the as-of time
    ranking_windows: int = 2  # and in this many such windows back to back (each a pass of the stages)
    ranking_holdout_share: float = 0.2  # customers held out of training, to judge the model against the blend
    ranking_promotion_margin: float = 0.02  # promoted when its held-out NDCG@20 is this much above the blend's
    ranking_objective: str = "rank_xendcg"  # LightGBM's ranking objective: rank_xendcg or lambdarank
    ranking_trees: int = 100  # boosting rounds
    ranking_learning_rate: float = 0.05
    ranking_leaves: int = 7  # leaves per tree
    ranking_min_leaf: int = 200  # candidates per leaf at least
    batch_customers: int = 5_000  # per-customer stages run over at most this many customers at a time
    batch_products: int = 20_000  # item-pair stages run over at most this many anchor products at a time
    # --- data quality (ingest validation and asset checks; see docs/data_quality.md) ---
    max_quarantine_share: float = 0.01  # a source fails its check when more of its rows are quarantined
    quarantine_share_min_rows: int = 100  # the share rule applies to an ingest of at least this many input rows
    future_tolerance_hours: float = 1.0  # timestamps later than the ingest time plus this are quarantined
    row_count_drift_band: float = 0.5  # warn when a table's row count moves more than this share between runs
    gx_sample_rows: int = 10_000  # rows that Great Expectations validates per check (a reservoir sample)
    purchase_match_hours: int = 24  # a purchase event matches an order line of its customer and product this close
    max_unmatched_purchase_share: float = 0.001  # purchases_have_orders warns when more purchase events have none
    # --- attribution (recommendation_attribution; docs/serving.md) ---
    attribution_window_hours: int = 168  # an order counts for the last click on its product this long before it
    # --- A/B variants (each a blend configuration; see docs/serving.md) ---
    ab_variants: str = DEFAULT_VARIANTS  # JSON: name -> {"share": s, "weight_<strategy>": w, ...}
    ab_salt: str = "recopipeline-ab-1"  # a new salt reshuffles customers into variants

    def strategy_weights(self) -> dict[str, float]:
        """Blend weight per strategy, in priority order (the first wins a tie for recommendation_type)."""
        return {s: getattr(self, f"weight_{s}") for s in STRATEGIES}

    def experiment(self) -> Experiment:
        """The A/B variants and the salt that assigns customers to them."""
        return Experiment.parse(self.ab_variants, self.ab_salt, tuple(f"weight_{s}" for s in STRATEGIES))

    def variant_strategy_weights(self) -> dict[str, dict[str, float]]:
        """Blend weight per strategy for each variant: the tuning's weights with the variant's overrides."""
        return {
            v.name: {s: v.weights.get(f"weight_{s}", weight) for s, weight in self.strategy_weights().items()}
            for v in self.experiment().variants
        }

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
        if self.batch_customers < 1 or self.batch_products < 1:
            raise ValueError("batch_customers and batch_products must be >= 1")
        if not 1 <= self.top_n <= self.candidates_per_customer:
            raise ValueError("top_n must be between 1 and candidates_per_customer")
        if self.trending_prior <= 0 or self.trending_products < 1:
            raise ValueError("trending_prior must be > 0 and trending_products >= 1")
        if self.diversity_max_per_category < 0 or self.diversity_max_per_brand < 0:
            raise ValueError("diversity_max_per_category and diversity_max_per_brand must be >= 0 (0: no cap)")
        if any(w < 0 for w in self.strategy_weights().values()):
            raise ValueError("strategy weights must be >= 0")
        if sum(self.strategy_weights().values()) <= 0:
            raise ValueError("at least one strategy weight must be > 0")
        if self.weight_repurchase > 0 and self.exclude_purchased:
            raise ValueError("the repurchase strategy needs exclude_purchased = false")
        if self.repurchase_half_life_days <= 0 or self.repurchase_trend_days < 1:
            raise ValueError("repurchase_half_life_days must be > 0 and repurchase_trend_days >= 1")
        if self.repurchase_rate_power < 0 or self.repurchase_trend_weight < 0:
            raise ValueError("repurchase_rate_power and repurchase_trend_weight must be >= 0")
        if self.ranking_window_days < 1 or self.ranking_windows < 1 or not 0 < self.ranking_holdout_share < 1:
            raise ValueError("ranking_window_days and ranking_windows must be >= 1, ranking_holdout_share in (0, 1)")
        if self.ranking_objective not in ("rank_xendcg", "lambdarank"):
            raise ValueError("ranking_objective must be rank_xendcg or lambdarank")
        if self.ranking_trees < 1 or self.ranking_leaves < 2 or self.ranking_min_leaf < 1 \
                or self.ranking_learning_rate <= 0 or self.ranking_promotion_margin < 0:
            raise ValueError("ranking_trees >= 1, ranking_leaves >= 2, ranking_min_leaf >= 1, ranking_learning_rate "
                             "> 0 and ranking_promotion_margin >= 0")
        if self.seeds_per_customer < 1 or self.cf_top_k < 1 or self.cf_min_common_customers < 1:
            raise ValueError("seeds_per_customer, cf_top_k and cf_min_common_customers must be >= 1")
        if self.ease_l2 <= 0 or self.ease_max_items < 2 or self.ease_top_k < 1:
            raise ValueError("ease_l2 must be > 0, ease_max_items >= 2 and ease_top_k >= 1")
        if self.similarity_threshold <= 0.42:
            raise ValueError("similarity_threshold must be > 0.42 so that similar products share a category")
        if not 0 <= self.max_quarantine_share <= 1:
            raise ValueError("max_quarantine_share must be between 0 and 1")
        if self.quarantine_share_min_rows < 0:
            raise ValueError("quarantine_share_min_rows must be >= 0")
        if self.future_tolerance_hours < 0 or self.row_count_drift_band <= 0 or self.gx_sample_rows < 1:
            raise ValueError("future_tolerance_hours must be >= 0, row_count_drift_band > 0 and gx_sample_rows >= 1")
        if self.purchase_match_hours < 0 or not 0 <= self.max_unmatched_purchase_share <= 1:
            raise ValueError("purchase_match_hours must be >= 0 and max_unmatched_purchase_share between 0 and 1")
        if self.attribution_window_hours < 1:
            raise ValueError("attribution_window_hours must be >= 1")
        for variant, weights in self.variant_strategy_weights().items():
            if sum(weights.values()) <= 0:
                raise ValueError(f"variant {variant!r}: at least one strategy weight must be > 0")
            if weights["repurchase"] > 0 and self.exclude_purchased:
                raise ValueError(f"variant {variant!r}: the repurchase strategy needs exclude_purchased = false")


DEFAULT_TUNING = Tuning()
