-- product_recommendations: candidates from every strategy, normalised, blended and ranked per customer.
--
-- Each strategy scores (customer, product) candidates; scores are divided by the customer's best score in
-- that strategy (0..1), multiplied by the strategy's weight, summed per (customer, product) and divided by
-- the sum of weights, so recommendation_score is in 0..1. One row per (customer, product): the strategy that
-- contributed most is its recommendation_type (ties go to the earlier strategy in `strategy_weights`) and its
-- source products are the evidence. Only available products (active, in stock or stock unknown) are kept;
-- products the customer bought are dropped when `exclude_purchased` is set. Ties rank by product key.
-- A/B testing: every customer belongs to one variant (`variant_buckets`, from a salted hash of the customer id,
-- see lib/variants.py) and is blended with that variant's weights (`strategy_weights` has a row per variant).
-- Sums run over DECIMAL, which is exact: a rerun gives the same bits however the threads split the rows.
-- Every row also carries each strategy's normalised score, <strategy>_score (raw score / the customer's best in
-- the strategy, the value the blend weights; 0 where the strategy did not propose the product or has no weight in
-- the customer's variant), one column per strategy of lib/tuning.py STRATEGIES, for a learned ranker.
WITH available AS (
    -- unknown stock (NULL) counts as in stock
    SELECT product_key FROM products WHERE is_active AND (stock_quantity > 0 OR stock_quantity IS NULL)
),
purchased AS (
    SELECT customer_key, product_key FROM customer_product_affinity WHERE purchase_count > 0
    UNION
    SELECT customer_key, product_key FROM orders WHERE order_timestamp <= getvariable('as_of')
),
seeds AS (
    -- each customer's strongest products drive the item-to-item strategies
    SELECT customer_key, product_key AS seed_id, weighted_affinity_score AS affinity
    FROM customer_product_affinity
    WHERE weighted_affinity_score > 0
    QUALIFY row_number() OVER (
        PARTITION BY customer_key ORDER BY weighted_affinity_score DESC, product_key
    ) <= getvariable('seeds_per_customer')
),
seed_contributions AS (
    -- every contribution of one seed product to one candidate in the item-to-item strategies
    SELECT s.customer_key, n.product_key_2 AS product_key, 'affinity_similar' AS strategy, s.seed_id,
           s.affinity * n.attribute_similarity_score AS contribution
    FROM seeds AS s
    JOIN product_similarity AS n ON n.product_key_1 = s.seed_id
    WHERE n.similarity_rank <= getvariable('neighbours_per_seed')
    UNION ALL
    -- collaborative: never a product the customer already interacted with (the tutorial's version
    -- recommends exactly those)
    SELECT s.customer_key, n.product_key_2, 'collaborative', s.seed_id, s.affinity * n.cf_similarity
    FROM seeds AS s
    JOIN collaborative_item_similarity AS n ON n.product_key_1 = s.seed_id
    WHERE n.cf_rank <= getvariable('neighbours_per_seed')
      AND NOT EXISTS (
          SELECT 1 FROM customer_product_affinity AS own
          WHERE own.customer_key = s.customer_key AND own.product_key = n.product_key_2
      )
    UNION ALL
    SELECT s.customer_key, n.product_key_2, 'complementary', s.seed_id, s.affinity * n.complementary_score
    FROM seeds AS s
    JOIN complementary_products AS n ON n.product_key_1 = s.seed_id
    WHERE n.complementary_rank <= getvariable('neighbours_per_seed')
    UNION ALL
    -- EASE item-item weights (ease_item_similarity) summed over every product the customer bought
    SELECT b.customer_key, n.product_key_2, 'ease', b.product_key, n.ease_weight
    FROM customer_product_affinity AS b
    JOIN ease_item_similarity AS n ON n.product_key_1 = b.product_key
    WHERE b.purchase_count > 0
      AND EXISTS (SELECT 1 FROM strategy_weights WHERE strategy = 'ease' AND weight > 0)
),
item_to_item AS (
    -- the evidence (source products) is listed later, only for the recommendations that are kept
    SELECT customer_key, product_key, strategy, sum(contribution::DECIMAL(38, 12))::DOUBLE AS raw_score,
           NULL::VARCHAR AS evidence
    FROM seed_contributions
    GROUP BY customer_key, product_key, strategy
),
category_preference AS (
    -- the most popular available products of the customer's top categories
    SELECT c.customer_key, p.product_key, 'category_preference' AS strategy,
           c.weighted_category_score * p.popularity_score
               / max(p.popularity_score) OVER (PARTITION BY p.category) AS raw_score,
           'category:' || c.category AS evidence
    FROM customer_category_preferences AS c
    JOIN product_popularity AS p ON p.segment = 'all' AND p.category = c.category
    WHERE c.category_rank <= getvariable('category_top_n')
      AND p.category_rank <= getvariable('category_products')
),
repurchase AS (
    -- "buy it again": the customer's own orders of the product, each weighted by its age (half-life
    -- repurchase_half_life_days), times the product's repurchase_factor (repeat-buyer rate and recent trend)
    SELECT o.customer_key, o.product_key, 'repurchase' AS strategy,
           sum(pow(0.5, date_diff('second', o.ordered_at, getvariable('as_of')) / 86400.0
                        / getvariable('repurchase_half_life_days'))::DECIMAL(38, 12))::DOUBLE
               * any_value(r.repurchase_factor) AS raw_score,
           'bought:' || count(*) AS evidence
    FROM (
        SELECT customer_key, product_key, order_id, max(order_timestamp) AS ordered_at
        FROM orders
        WHERE order_timestamp <= getvariable('as_of')
          AND EXISTS (SELECT 1 FROM strategy_weights WHERE strategy = 'repurchase' AND weight > 0)
        GROUP BY customer_key, product_key, order_id
    ) AS o
    JOIN product_repurchase_rates AS r USING (product_key)
    GROUP BY o.customer_key, o.product_key
),
popular AS (
    -- cold start and fill: the customer's segment's popular products, so every known customer is served
    SELECT s.customer_key, p.product_key, 'popular' AS strategy,
           p.popularity_score + 1e-6 * (getvariable('popular_products') - p.popularity_rank + 1) AS raw_score,
           'popular:' || s.customer_segment AS evidence
    FROM customer_segments AS s
    JOIN product_popularity AS p ON p.segment = s.customer_segment
    WHERE p.popularity_rank <= getvariable('popular_products')
),
trending AS (
    -- the products whose interest grows now (product_trending, recomputed hourly): one list for every known
    -- customer, scored by its trend score
    SELECT s.customer_key, t.product_key, 'trending' AS strategy, t.trending_score AS raw_score,
           'trending' AS evidence
    FROM customer_segments AS s
    CROSS JOIN product_trending AS t
    WHERE t.trending_rank <= getvariable('trending_products')
      AND EXISTS (SELECT 1 FROM strategy_weights WHERE strategy = 'trending' AND weight > 0)
),
candidates AS (
    SELECT * FROM item_to_item
    UNION ALL SELECT * FROM category_preference
    UNION ALL SELECT * FROM repurchase
    UNION ALL SELECT * FROM popular
    UNION ALL SELECT * FROM trending
),
customer_variants AS (
    -- the first 32 bits of md5(salt:customer_id) fall in exactly one variant's [lower_bound, upper_bound)
    SELECT c.customer_key, v.variant
    FROM (SELECT DISTINCT customer_key FROM candidates) AS c
    JOIN customer_keys AS k USING (customer_key)
    JOIN variant_buckets AS v
      ON CAST('0x' || left(md5(getvariable('ab_salt') || ':' || k.customer_id), 8) AS UBIGINT)
         BETWEEN v.lower_bound AND v.upper_bound - 1
),
eligible AS (
    SELECT c.*
    FROM candidates AS c
    JOIN available AS a USING (product_key)
    WHERE c.raw_score > 0
      AND NOT (
          getvariable('exclude_purchased')
          AND EXISTS (SELECT 1 FROM purchased AS b WHERE b.customer_key = c.customer_key AND b.product_key = c.product_key)
      )
),
best AS (
    SELECT customer_key, strategy, max(raw_score) AS best_score
    FROM eligible
    GROUP BY customer_key, strategy
),
weighted AS (
    -- strength: the contribution rounded to 1e-9, then the earlier strategy (lower priority), as one BIGINT,
    -- so that the strongest strategy is a plain max() (priorities are < 16: at most 15 strategies)
    SELECT e.customer_key,
           e.product_key,
           e.evidence,
           v.variant,
           e.strategy,
           e.raw_score / b.best_score AS normalised_score,
           w.weight * e.raw_score / b.best_score AS contribution,
           CAST(round(w.weight * e.raw_score / b.best_score * 1e9) AS BIGINT) * 16 + (15 - w.priority) AS strength,
           1 << w.priority AS strategy_bit
    FROM eligible AS e
    JOIN best AS b USING (customer_key, strategy)
    JOIN customer_variants AS v USING (customer_key)
    JOIN strategy_weights AS w ON w.variant = v.variant AND w.strategy = e.strategy
    WHERE w.weight > 0
),
weight_totals AS (
    SELECT variant, sum(weight::DECIMAL(38, 12))::DOUBLE AS total_weight FROM strategy_weights GROUP BY variant
),
blended AS (
    SELECT customer_key,
           product_key,
           variant,
           sum(contribution::DECIMAL(38, 12))::DOUBLE AS contribution,
           max(strength) AS strength,
           arg_max(evidence, strength) AS evidence,     -- the strongest strategy's evidence
           bit_or(strategy_bit) AS strategy_bits,       -- every contributing strategy
           -- each strategy's normalised score (one row per (customer, product, strategy): max() picks it)
           coalesce(max(normalised_score) FILTER (WHERE strategy = 'affinity_similar'), 0::DOUBLE)
               AS affinity_similar_score,
           coalesce(max(normalised_score) FILTER (WHERE strategy = 'collaborative'), 0::DOUBLE)
               AS collaborative_score,
           coalesce(max(normalised_score) FILTER (WHERE strategy = 'ease'), 0::DOUBLE)
               AS ease_score,
           coalesce(max(normalised_score) FILTER (WHERE strategy = 'complementary'), 0::DOUBLE)
               AS complementary_score,
           coalesce(max(normalised_score) FILTER (WHERE strategy = 'category_preference'), 0::DOUBLE)
               AS category_preference_score,
           coalesce(max(normalised_score) FILTER (WHERE strategy = 'repurchase'), 0::DOUBLE)
               AS repurchase_score,
           coalesce(max(normalised_score) FILTER (WHERE strategy = 'popular'), 0::DOUBLE)
               AS popular_score,
           coalesce(max(normalised_score) FILTER (WHERE strategy = 'trending'), 0::DOUBLE)
               AS trending_score
    FROM weighted
    GROUP BY customer_key, product_key, variant
),
ranked AS (
    SELECT b.customer_key,
           b.product_key,
           b.variant,
           round(b.contribution / t.total_weight, 9) AS recommendation_score,
           15 - b.strength % 16 AS strongest_priority,
           b.evidence,
           b.strategy_bits,
           b.affinity_similar_score,
           b.collaborative_score,
           b.ease_score,
           b.complementary_score,
           b.category_preference_score,
           b.repurchase_score,
           b.popular_score,
           b.trending_score,
           row_number() OVER (
               PARTITION BY b.customer_key ORDER BY round(b.contribution / t.total_weight, 9) DESC, b.product_key
           ) AS recommendation_rank
    FROM blended AS b
    JOIN weight_totals AS t USING (variant)
    QUALIFY recommendation_rank <= getvariable('candidates_per_customer')
),
strongest AS (
    SELECT r.*, w.strategy
    FROM ranked AS r
    JOIN strategy_weights AS w ON w.variant = r.variant AND w.priority = r.strongest_priority
),
strategy_sets AS (
    -- each combination of contributing strategies that occurs, as sorted text
    SELECT s.variant, s.strategy_bits, string_agg(w.strategy, ',' ORDER BY w.strategy) AS strategies
    FROM (SELECT DISTINCT variant, strategy_bits FROM ranked) AS s
    JOIN strategy_weights AS w ON w.variant = s.variant AND (s.strategy_bits >> w.priority) & 1 = 1
    GROUP BY s.variant, s.strategy_bits
),
seed_evidence AS (
    -- source products of the kept item-to-item recommendations, by id, strongest contribution first; at most
    -- seeds_per_customer of them (ease sums over every bought product, so its list is cut to the strongest)
    SELECT r.customer_key, r.product_key,
           array_to_string(
               list(k.product_id ORDER BY c.contribution DESC, c.seed_id)[1:getvariable('seeds_per_customer')], ','
           ) AS evidence
    FROM strongest AS r
    JOIN seed_contributions AS c
      ON c.customer_key = r.customer_key AND c.product_key = r.product_key AND c.strategy = r.strategy
    JOIN product_keys AS k ON k.product_key = c.seed_id
    GROUP BY r.customer_key, r.product_key
)
SELECT r.customer_key,
       r.product_key,
       r.strategy                           AS recommendation_type,
       r.recommendation_score,
       s.strategies,
       coalesce(e.evidence, r.evidence)     AS evidence,
       r.recommendation_rank,
       r.variant,
       r.affinity_similar_score,
       r.collaborative_score,
       r.ease_score,
       r.complementary_score,
       r.category_preference_score,
       r.repurchase_score,
       r.popular_score,
       r.trending_score
FROM strongest AS r
JOIN strategy_sets AS s USING (variant, strategy_bits)
LEFT JOIN seed_evidence AS e USING (customer_key, product_key)
