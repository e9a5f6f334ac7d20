"""Asset checks of the derived assets: the invariants each table must hold, evaluated in the asset's own step.

Every rule is an exact DuckDB query over the whole table that returns the violating rows (none = pass), so it
holds at any scale without pulling the table into Python. `customer_top_recommendations` also gets a Great
Expectations suite, run on whole customers drawn at random (a bounded sample). Correctness rules are blocking:
when one fails, nothing downstream of the asset runs in that run. Soft rules (`SHARES`: how many rows disagree
with another source) and row-count drift only warn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import dagster as dg

from recopipeline.defs.quality import results
from recopipeline.lib.bucket_scope import bucket_session
from recopipeline.lib.contract import PINNED
from recopipeline.lib.gx_adapter import Expectation, validate
from recopipeline.lib.keys import dictionary_relations
from recopipeline.lib.tuning import STRATEGIES, Tuning
from recopipeline.lib.warehouse import Warehouse

UNIQUE_KEY = "unique_key"
UNIQUE_RANK = "unique_rank"
VALUES_IN_RANGE = "values_in_range"
EVERY_CUSTOMER_SEGMENTED = "every_customer_segmented"
ONLY_AVAILABLE_PRODUCTS = "only_available_products"
NOTHING_PURCHASED = "nothing_already_purchased"
EVERY_CUSTOMER_SERVED = "every_customer_served"
GX_EXPECTATIONS = "gx_expectations"
ROW_COUNT_DRIFT = "row_count_drift"
PURCHASES_HAVE_ORDERS = "purchases_have_orders"
LEARNED_RANKING_PROMOTED = "learned_ranking_promoted"

SEGMENTS = ("new", "returning", "vip", "at_risk")


@dataclass(frozen=True)
class Invariant:
    """A rule over a table: `sql` selects the rows that break it; `needs` are the other tables it reads."""

    check: str
    description: str
    sql: str
    needs: tuple[str, ...] = ()
    applies: Callable[[Tuning], bool] = lambda tuning: True
    blocking: bool = True  # False: a warning (WARN severity), the asset's downstream runs anyway


@dataclass(frozen=True)
class Share:
    """A soft rule (WARN, never blocking): `sql` selects the rows of `population` that break it; the check warns
    when they are more than the tuning value named `limit` (a share) of the population."""

    check: str
    description: str  # the rows counted, e.g. "purchase events without an order line ..."
    population: str
    sql: str
    limit: str
    needs: tuple[str, ...] = ()


def _unique(asset: str, columns: str, check: str = UNIQUE_KEY) -> Invariant:
    return Invariant(
        check,
        f"({columns}) is unique",
        f"SELECT {columns}, count(*) AS copies FROM {asset} GROUP BY ALL HAVING count(*) > 1",
    )


def _in_range(asset: str, description: str, broken: str, columns: str) -> Invariant:
    return Invariant(VALUES_IN_RANGE, description, f"SELECT {columns} FROM {asset} WHERE {broken}")


def _pairs(asset: str, rank: str, score: str, low: str, low_label: str | None = None) -> list[Invariant]:
    """Product-to-product tables: unique pairs, unique ranks per product, no self pairs, scores in range."""
    return [
        _unique(asset, "product_key_1, product_key_2"),
        _unique(asset, f"product_key_1, {rank}", UNIQUE_RANK),
        _in_range(
            asset,
            f"{score} in [{low_label or low}, 1], {rank} >= 1 and never a product paired with itself",
            # 1e-9: floating-point error can put a perfect cosine a hair above 1
            f"{score} IS NULL OR {score} < {low} OR {score} > 1 + 1e-9 OR {rank} < 1 OR product_key_1 = product_key_2",
            f"product_key_1, product_key_2, {score}, {rank}",
        ),
    ]


def _recommendations(asset: str, max_rank: str, by_id: bool = False) -> list[Invariant]:
    """Recommendation tables: one row per (customer, product) and per rank, only sellable, unbought products.

    `by_id`: the table names customers and products by id (the people-facing top N), not by key.
    """
    customer, product = ("customer_id", "product_id") if by_id else ("customer_key", "product_key")
    # the behaviour tables carry keys: a table by id reads them with the ids joined back
    affinity = (
        "(SELECT * FROM customer_product_affinity JOIN customer_keys USING (customer_key) "
        "JOIN product_keys USING (product_key))" if by_id else "customer_product_affinity"
    )
    segments = (
        "(SELECT * FROM customer_segments JOIN customer_keys USING (customer_key))" if by_id else "customer_segments"
    )
    dictionaries = ("customer_keys", "product_keys") if by_id else ()
    return [
        _unique(asset, f"{customer}, {product}"),
        _unique(asset, f"{customer}, recommendation_rank", UNIQUE_RANK),
        _in_range(
            asset,
            f"recommendation_score in [0, 1] and recommendation_rank in [1, {max_rank}]",
            "recommendation_score IS NULL OR recommendation_score < 0 OR recommendation_score > 1 "
            f"OR recommendation_rank < 1 OR recommendation_rank > getvariable('{max_rank}')",
            f"{customer}, {product}, recommendation_rank, recommendation_score",
        ),
        Invariant(
            ONLY_AVAILABLE_PRODUCTS,
            "every recommended product is in the catalogue, active and in stock (or its stock unknown)",
            f"""
            SELECT r.{customer}, r.{product}, p.is_active, p.stock_quantity
            FROM {asset} AS r
            LEFT JOIN products AS p USING ({product})
            WHERE p.{product} IS NULL OR NOT p.is_active OR p.stock_quantity <= 0  -- NULL stock: unknown, in stock
            """,
            needs=("products",),
        ),
        Invariant(
            NOTHING_PURCHASED,
            "no customer is recommended a product they bought up to the as-of time (orders or purchase events)",
            f"""
            WITH bought AS (
                SELECT {customer}, {product} FROM orders WHERE order_timestamp <= getvariable('as_of')
                UNION
                SELECT {customer}, {product} FROM {affinity} WHERE purchase_count > 0
            )
            SELECT r.{customer}, r.{product}, r.recommendation_rank
            FROM {asset} AS r
            SEMI JOIN bought USING ({customer}, {product})
            """,
            needs=("orders", "customer_product_affinity", *dictionaries),
            applies=lambda tuning: tuning.exclude_purchased,
        ),
        Invariant(
            EVERY_CUSTOMER_SERVED,
            "every known customer (a row of customer_segments) has at least one recommendation",
            f"SELECT {customer}, customer_segment FROM {segments} "
            f"ANTI JOIN (SELECT DISTINCT {customer} FROM {asset}) USING ({customer})",
            needs=("customer_segments", *dictionaries),
        ),
    ]


INVARIANTS: dict[str, list[Invariant]] = {
    "customer_segments": [
        _unique("customer_segments", "customer_key"),
        Invariant(
            EVERY_CUSTOMER_SEGMENTED,
            "every known customer has a segment row",
            "SELECT customer_key FROM customers ANTI JOIN customer_segments USING (customer_key)",
            needs=("customers",),
        ),
        _in_range(
            "customer_segments",
            f"customer_segment in ({', '.join(SEGMENTS)}) and counts >= 0",
            f"customer_segment IS NULL OR customer_segment NOT IN ({', '.join(repr(s) for s in SEGMENTS)}) "
            "OR event_count < 0 OR order_count < 0",
            "customer_key, customer_segment, event_count, order_count",
        ),
    ],
    "customer_behavior_comprehensive": [
        _unique("customer_behavior_comprehensive", "customer_key, product_key"),
        _in_range(
            "customer_behavior_comprehensive",
            # every recency weight is in [0, 1], so their sums lie between 0 and the number of events summed
            "at least one event, counts by type >= 0 and within it, recency sums in [0, events] (purchases': "
            "[0, purchases], set exactly when there are purchases), a segment, and no event after the as-of time",
            "event_count < 1 OR least(view_count, click_count, cart_add_count, cart_remove_count, purchase_count) < 0 "
            "OR view_count + click_count + cart_add_count + cart_remove_count + purchase_count > event_count "
            "OR recency_sum IS NULL OR recency_sum < 0 OR recency_sum > event_count "
            "OR (purchase_count > 0) <> (purchase_recency IS NOT NULL) "
            "OR purchase_recency < 0 OR purchase_recency > purchase_count OR customer_segment IS NULL "
            "OR last_interaction_at > getvariable('as_of') OR last_purchase_at > last_interaction_at",
            "customer_key, product_key, event_count, purchase_count, recency_sum, purchase_recency, last_interaction_at",
        ),
    ],
    "customer_product_affinity": [
        _unique("customer_product_affinity", "customer_key, product_key"),
        _in_range(
            "customer_product_affinity",
            # event weights may be negative (a cart_remove penalty), so the score itself has no lower bound
            "weighted_affinity_score is set and event counts >= 0",
            "weighted_affinity_score IS NULL OR view_count < 0 OR click_count < 0 OR cart_add_count < 0 "
            "OR cart_remove_count < 0 OR purchase_count < 0",
            "customer_key, product_key, weighted_affinity_score",
        ),
    ],
    "customer_category_preferences": [
        _unique("customer_category_preferences", "customer_key, category"),
        _unique("customer_category_preferences", "customer_key, category_rank", UNIQUE_RANK),
        _in_range(
            "customer_category_preferences",
            "weighted_category_score is set and category_rank >= 1",
            "weighted_category_score IS NULL OR category_rank < 1",
            "customer_key, category, weighted_category_score, category_rank",
        ),
    ],
    "product_trending": [
        _unique("product_trending", "product_key"),
        _unique("product_trending", "trending_rank", UNIQUE_RANK),
        _in_range(
            "product_trending",
            "trending_score > 1 (only growing products), scores >= 0, trending_rank in [1, trending_products]",
            "trending_score IS NULL OR trending_score <= 1 OR recent_score < 0 OR baseline_daily_score < 0 "
            "OR trending_rank < 1 OR trending_rank > getvariable('trending_products')",
            "product_key, recent_score, baseline_daily_score, trending_score, trending_rank",
        ),
        Invariant(
            ONLY_AVAILABLE_PRODUCTS,
            "every listed product is in the catalogue, active and in stock (or its stock unknown)",
            """
            SELECT r.product_key, p.is_active, p.stock_quantity
            FROM product_trending AS r
            LEFT JOIN products AS p USING (product_key)
            WHERE p.product_key IS NULL OR NOT p.is_active OR p.stock_quantity <= 0  -- NULL stock: unknown, in stock
            """,
            needs=("products",),
        ),
    ],
    "product_popularity": [
        _unique("product_popularity", "segment, product_key"),
        _unique("product_popularity", "segment, popularity_rank", UNIQUE_RANK),
        _in_range(
            "product_popularity",
            "popularity_score is set and popularity_rank >= 1",
            "popularity_score IS NULL OR popularity_rank < 1",
            "segment, product_key, popularity_score, popularity_rank",
        ),
        Invariant(
            ONLY_AVAILABLE_PRODUCTS,
            "every listed product is in the catalogue, active and in stock (or its stock unknown)",
            """
            SELECT r.segment, r.product_key, p.is_active, p.stock_quantity
            FROM product_popularity AS r
            LEFT JOIN products AS p USING (product_key)
            WHERE p.product_key IS NULL OR NOT p.is_active OR p.stock_quantity <= 0  -- NULL stock: unknown, in stock
            """,
            needs=("products",),
        ),
    ],
    "product_repurchase_rates": [
        _unique("product_repurchase_rates", "product_key"),
        _in_range(
            "product_repurchase_rates",
            "0 <= repeat_buyers <= buyers, repeat_rate in (0, 1), recent_trend in [0, 1], repurchase_factor > 0",
            "repeat_buyers < 0 OR repeat_buyers > buyers OR repeat_rate <= 0 OR repeat_rate >= 1 "
            "OR recent_trend < 0 OR recent_trend > 1 OR NOT repurchase_factor > 0",
            "product_key, buyers, repeat_buyers, repeat_rate, recent_trend, repurchase_factor",
        ),
    ],
    "product_similarity": _pairs(
        "product_similarity", "similarity_rank", "attribute_similarity_score", "getvariable('similarity_threshold')",
        "similarity_threshold",
    ),
    "products_bought_together": [
        _unique("products_bought_together", "product_key_1, product_key_2"),
        _in_range(
            "products_bought_together",
            "co_purchase_similarity and confidence in (0, 1], co_purchase_count >= min_support, no self pairs",
            "co_purchase_similarity IS NULL OR co_purchase_similarity <= 0 OR co_purchase_similarity > 1 "
            "OR confidence <= 0 OR confidence > 1 OR co_purchase_count < getvariable('min_support') "
            "OR product_key_1 = product_key_2",
            "product_key_1, product_key_2, co_purchase_count, co_purchase_similarity, confidence",
        ),
    ],
    "complementary_products": _pairs("complementary_products", "complementary_rank", "complementary_score", "0"),
    "collaborative_item_similarity": _pairs("collaborative_item_similarity", "cf_rank", "cf_similarity", "0"),
    "ease_item_similarity": [
        _unique("ease_item_similarity", "product_key_1, product_key_2"),
        _unique("ease_item_similarity", "product_key_1, ease_rank", UNIQUE_RANK),
        _in_range(
            "ease_item_similarity",
            "ease_weight > 0 (only positive weights are kept), ease_rank >= 1 and no self pairs",
            "ease_weight IS NULL OR ease_weight <= 0 OR ease_rank < 1 OR product_key_1 = product_key_2",
            "product_key_1, product_key_2, ease_weight, ease_rank",
        ),
    ],
    "product_recommendations": _recommendations("product_recommendations", "candidates_per_customer"),
    "learned_recommendations": [
        _unique("learned_recommendations", "customer_key, product_key"),
        _unique("learned_recommendations", "customer_key, recommendation_rank", UNIQUE_RANK),
        _in_range(
            "learned_recommendations",
            "recommendation_score in [0, 1] and recommendation_rank in [1, candidates_per_customer]",
            "recommendation_score IS NULL OR recommendation_score < 0 OR recommendation_score > 1 "
            "OR recommendation_rank < 1 OR recommendation_rank > getvariable('candidates_per_customer')",
            "customer_key, product_key, recommendation_rank, recommendation_score",
        ),
    ],
    "candidate_features": [_unique("candidate_features", "customer_key, product_key")],
    "ranking_model": [
        Invariant(
            LEARNED_RANKING_PROMOTED,
            "the learned ranking beats the hand-set blend on held-out customers (otherwise the blend's order is "
            "kept: the reason says why)",
            "SELECT promoted, reason, holdout_ndcg_model, holdout_ndcg_blend FROM ranking_model WHERE NOT promoted",
            applies=lambda tuning: tuning.learned_ranking,
            blocking=False,
        ),
    ],
    "customer_top_recommendations": _recommendations("customer_top_recommendations", "top_n", by_id=True),
    "customer_placement_recommendations": [
        _unique("customer_placement_recommendations", "customer_id, placement, product_id"),
        _unique("customer_placement_recommendations", "customer_id, placement, recommendation_rank", UNIQUE_RANK),
        _in_range(
            "customer_placement_recommendations",
            "placement is recently_viewed or buy_it_again, recommendation_score in (0, 1] and recommendation_rank "
            "in [1, top_n]",
            "placement NOT IN ('recently_viewed', 'buy_it_again') OR recommendation_score IS NULL "
            "OR recommendation_score <= 0 OR recommendation_score > 1 "
            "OR recommendation_rank < 1 OR recommendation_rank > getvariable('top_n')",
            "customer_id, placement, product_id, recommendation_rank, recommendation_score",
        ),
        Invariant(
            ONLY_AVAILABLE_PRODUCTS,
            "every listed product is in the catalogue, active and in stock (or its stock unknown)",
            """
            SELECT r.customer_id, r.placement, r.product_id, p.is_active, p.stock_quantity
            FROM customer_placement_recommendations AS r
            LEFT JOIN products AS p USING (product_id)
            WHERE p.product_id IS NULL OR NOT p.is_active OR p.stock_quantity <= 0  -- NULL stock: unknown, in stock
            """,
            needs=("products",),
        ),
    ],
}

# Purchase events are behaviour from the front-end, order lines the sales record (docs/data_contract.md); a
# purchase event without an accepted order line still raises affinities, so the share of them is measured.
SHARES: dict[str, list[Share]] = {
    "customer_behavior_comprehensive": [
        Share(
            PURCHASES_HAVE_ORDERS,
            "purchase events have no order line of the same customer and product within purchase_match_hours",
            # the purchase events the table sums: up to the as-of time, of a known customer and product
            """
            SELECT e.event_id FROM customer_interactions AS e SEMI JOIN customer_behavior_comprehensive
                USING (customer_key, product_key)
            WHERE e.interaction_type = 'purchase' AND e.interaction_timestamp <= getvariable('as_of')
            """,
            """
            SELECT e.event_id, e.customer_id, e.product_id, e.interaction_timestamp
            FROM customer_interactions AS e
            SEMI JOIN customer_behavior_comprehensive USING (customer_key, product_key)
            WHERE e.interaction_type = 'purchase' AND e.interaction_timestamp <= getvariable('as_of')
              AND NOT EXISTS (
                  SELECT 1
                  FROM orders AS o
                  WHERE o.customer_key = e.customer_key
                    AND o.product_key = e.product_key
                    AND o.order_timestamp
                        BETWEEN e.interaction_timestamp - to_hours(getvariable('purchase_match_hours'))
                            AND e.interaction_timestamp + to_hours(getvariable('purchase_match_hours'))
              )
            """,
            limit="max_unmatched_purchase_share",
            needs=("orders", "customer_interactions"),
        ),
    ],
}

GX_ASSETS = ("customer_top_recommendations",)


def derived_check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    """The checks of a derived asset (none for an asset without invariants)."""
    if asset not in INVARIANTS:
        return []
    checks = [
        dg.AssetCheckSpec(i.check, asset=asset, blocking=i.blocking,
                          description=f"{i.description} (exact, whole table).")
        for i in INVARIANTS[asset]
    ]
    checks += [
        dg.AssetCheckSpec(
            s.check, asset=asset, blocking=False,
            description=f"Warns when more than {s.limit} of the {s.description} (exact, whole table).",
        )
        for s in SHARES.get(asset, [])
    ]
    if asset in GX_ASSETS:
        checks.append(dg.AssetCheckSpec(
            GX_EXPECTATIONS, asset=asset, blocking=True,
            description="Great Expectations suite (not null, rank in 1..top_n, score in [0, 1], type known, "
            "(customer, rank) and (customer, product) unique) on the rows of a random sample of customers.",
        ))
    checks.append(dg.AssetCheckSpec(
        ROW_COUNT_DRIFT, asset=asset, blocking=False,
        description="Warns when the row count moved more than row_count_drift_band since the previous run.",
    ))
    return checks


def run_derived_checks(
    context: dg.AssetExecutionContext, store: Warehouse, tuning: Tuning, asset: str, as_of: datetime,
    bucket: int | None = None, buckets: int = 1,
) -> list[dg.AssetCheckResult]:
    """Evaluate the asset's checks on the table just written (on one customer bucket's rows, given `bucket`)."""
    if asset not in INVARIANTS:
        return []
    invariants = INVARIANTS[asset]
    shares = SHARES.get(asset, [])
    needs = sorted({name for rule in [*invariants, *shares] for name in rule.needs} - {asset})
    checked: list[dg.AssetCheckResult] = []
    shown = dictionary_relations(store)  # the examples show the ids next to the keys
    values = {**tuning.as_dict(), "as_of": as_of}
    session = (store.session([asset, *needs], variables=values) if bucket is None
               else bucket_session(store, [asset, *needs], bucket, buckets, variables=values))
    with session as con:
        for invariant in invariants:
            if invariant.applies(tuning):
                checked.append(results.violations(
                    con, invariant.check, invariant.sql, invariant.description, shown,
                    severity=results.ERROR if invariant.blocking else results.WARN,
                ))
            else:
                checked.append(dg.AssetCheckResult(
                    check_name=invariant.check, passed=True, description="not applicable with these tuning values"
                ))
        for rule in shares:
            checked.append(results.share(
                con, rule.check, rule.sql, rule.population, getattr(tuning, rule.limit), rule.description
            ))
        (rows,) = con.sql(f"SELECT count(*) FROM {asset}").fetchall()[0]
        if asset in GX_ASSETS:
            checked.append(_top_recommendations_suite(con, asset, tuning, int(rows)))
    checked.append(results.row_count_drift(context, ROW_COUNT_DRIFT, asset, int(rows), tuning.row_count_drift_band))
    return checked


def _top_recommendations_suite(con, asset: str, tuning: Tuning, rows: int) -> dg.AssetCheckResult:
    """GX on every row of a random set of customers, so per-customer uniqueness is exact for them."""
    customers = max(1, tuning.gx_sample_rows // tuning.top_n)
    sample = con.sql(f"""
        WITH chosen AS (
            SELECT customer_id FROM (SELECT DISTINCT customer_id FROM {asset})
            USING SAMPLE reservoir({customers} ROWS) REPEATABLE (42)
        )
        SELECT * FROM {asset} SEMI JOIN chosen USING (customer_id)
    """).df()
    suite = [
        Expectation("ExpectTableColumnsToMatchSet", {
            "column_set": ["customer_id", "recommendation_rank", "product_id", "product_name", "category", "price",
                           "recommendation_type", "recommendation_score", "evidence"],
            "exact_match": False,
        }),
        *[Expectation("ExpectColumnValuesToNotBeNull", {"column": c})
          for c in ("customer_id", "product_id", "recommendation_rank", "recommendation_type", "recommendation_score")],
        Expectation("ExpectColumnValuesToBeBetween",
                    {"column": "recommendation_rank", "min_value": 1, "max_value": tuning.top_n}),
        Expectation("ExpectColumnValuesToBeBetween",
                    {"column": "recommendation_score", "min_value": 0, "max_value": 1}),
        Expectation("ExpectColumnValuesToBeBetween", {"column": "price", "min_value": 0}),
        Expectation("ExpectColumnValuesToBeInSet", {"column": "recommendation_type", "value_set": [*STRATEGIES, PINNED]}),
        Expectation("ExpectCompoundColumnsToBeUnique", {"column_list": ["customer_id", "recommendation_rank"]}),
        Expectation("ExpectCompoundColumnsToBeUnique", {"column_list": ["customer_id", "product_id"]}),
    ]
    return results.expectations(GX_EXPECTATIONS, validate(sample, f"{asset}_suite", suite), rows)
