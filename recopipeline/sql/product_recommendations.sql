-- product_recommendations: candidates from every strategy, normalised, blended and ranked per customer.
--
-- Each strategy scores (customer, product) candidates; scores are divided by the customer's best score in
-- that strategy (0..1), multiplied by the strategy's weight, summed per (customer, product) and divided by
-- the sum of weights, so recommendation_score is in 0..1. One row per (customer, product): the strategy that
-- contributed most is its recommendation_type (ties go to the earlier strategy in `strategy_weights`) and its
-- source products are the evidence. Only available products (active, in stock) are kept; products the
-- customer bought are dropped when `exclude_purchased` is set. Ties rank by product id.
WITH available AS (
    SELECT product_id FROM products WHERE is_active AND stock_quantity > 0
),
purchased AS (
    SELECT customer_id, product_id FROM customer_product_affinity WHERE purchase_count > 0
    UNION
    SELECT customer_id, product_id FROM orders WHERE order_timestamp <= getvariable('as_of')
),
seeds AS (
    -- each customer's strongest products drive the item-to-item strategies
    SELECT customer_id, product_id AS seed_id, weighted_affinity_score AS affinity
    FROM customer_product_affinity
    WHERE weighted_affinity_score > 0
    QUALIFY row_number() OVER (
        PARTITION BY customer_id ORDER BY weighted_affinity_score DESC, product_id
    ) <= getvariable('seeds_per_customer')
),
affinity_similar AS (
    SELECT s.customer_id, n.product_id_2 AS product_id, 'affinity_similar' AS strategy,
           sum(s.affinity * n.attribute_similarity_score) AS raw_score,
           string_agg(s.seed_id, ',' ORDER BY s.affinity * n.attribute_similarity_score DESC, s.seed_id) AS evidence
    FROM seeds AS s
    JOIN product_similarity AS n ON n.product_id_1 = s.seed_id
    WHERE n.similarity_rank <= getvariable('neighbours_per_seed')
    GROUP BY s.customer_id, n.product_id_2
),
collaborative AS (
    -- never a product the customer already interacted with (the tutorial's version recommends exactly those)
    SELECT s.customer_id, n.product_id_2 AS product_id, 'collaborative' AS strategy,
           sum(s.affinity * n.cf_similarity) AS raw_score,
           string_agg(s.seed_id, ',' ORDER BY s.affinity * n.cf_similarity DESC, s.seed_id) AS evidence
    FROM seeds AS s
    JOIN collaborative_item_similarity AS n ON n.product_id_1 = s.seed_id
    WHERE n.cf_rank <= getvariable('neighbours_per_seed')
      AND NOT EXISTS (
          SELECT 1 FROM customer_product_affinity AS own
          WHERE own.customer_id = s.customer_id AND own.product_id = n.product_id_2
      )
    GROUP BY s.customer_id, n.product_id_2
),
complementary AS (
    SELECT s.customer_id, n.product_id_2 AS product_id, 'complementary' AS strategy,
           sum(s.affinity * n.complementary_score) AS raw_score,
           string_agg(s.seed_id, ',' ORDER BY s.affinity * n.complementary_score DESC, s.seed_id) AS evidence
    FROM seeds AS s
    JOIN complementary_products AS n ON n.product_id_1 = s.seed_id
    WHERE n.complementary_rank <= getvariable('neighbours_per_seed')
    GROUP BY s.customer_id, n.product_id_2
),
category_preference AS (
    -- the most popular available products of the customer's top categories
    SELECT c.customer_id, p.product_id, 'category_preference' AS strategy,
           c.weighted_category_score * p.popularity_score
               / max(p.popularity_score) OVER (PARTITION BY p.category) AS raw_score,
           'category:' || c.category AS evidence
    FROM customer_category_preferences AS c
    JOIN product_popularity AS p ON p.segment = 'all' AND p.category = c.category
    WHERE c.category_rank <= getvariable('category_top_n')
      AND p.category_rank <= getvariable('category_products')
),
repurchase AS (
    -- "buy it again": the customer's own purchases, recency-weighted
    SELECT customer_id, product_id, 'repurchase' AS strategy,
           weighted_purchase_count AS raw_score,
           'bought:' || purchase_count AS evidence
    FROM customer_product_affinity
    WHERE purchase_count > 0 AND getvariable('weight_repurchase') > 0
),
popular AS (
    -- cold start and fill: the customer's segment's popular products, so every known customer is served
    SELECT s.customer_id, p.product_id, 'popular' AS strategy,
           p.popularity_score + 1e-6 * (getvariable('popular_products') - p.popularity_rank + 1) AS raw_score,
           'popular:' || s.customer_segment AS evidence
    FROM customer_segments AS s
    JOIN product_popularity AS p ON p.segment = s.customer_segment
    WHERE p.popularity_rank <= getvariable('popular_products')
),
candidates AS (
    SELECT * FROM affinity_similar
    UNION ALL SELECT * FROM collaborative
    UNION ALL SELECT * FROM complementary
    UNION ALL SELECT * FROM category_preference
    UNION ALL SELECT * FROM repurchase
    UNION ALL SELECT * FROM popular
),
eligible AS (
    SELECT c.*
    FROM candidates AS c
    JOIN available AS a USING (product_id)
    WHERE c.raw_score > 0
      AND NOT (
          getvariable('exclude_purchased')
          AND EXISTS (SELECT 1 FROM purchased AS b WHERE b.customer_id = c.customer_id AND b.product_id = c.product_id)
      )
),
weighted AS (
    SELECT e.*,
           w.priority,
           w.weight * e.raw_score / max(e.raw_score) OVER (PARTITION BY e.customer_id, e.strategy) AS contribution
    FROM eligible AS e
    JOIN strategy_weights AS w USING (strategy)
    WHERE w.weight > 0
),
strongest AS (
    SELECT customer_id, product_id, strategy AS recommendation_type, evidence
    FROM weighted
    QUALIFY row_number() OVER (
        PARTITION BY customer_id, product_id ORDER BY round(contribution, 9) DESC, priority
    ) = 1
),
blended AS (
    SELECT customer_id,
           product_id,
           round(sum(contribution) / (SELECT sum(weight) FROM strategy_weights), 9) AS recommendation_score,
           string_agg(strategy, ',' ORDER BY priority) AS strategies
    FROM weighted
    GROUP BY customer_id, product_id
)
SELECT b.customer_id,
       b.product_id,
       s.recommendation_type,
       b.recommendation_score,
       b.strategies,
       s.evidence,
       row_number() OVER (
           PARTITION BY b.customer_id ORDER BY b.recommendation_score DESC, b.product_id
       ) AS recommendation_rank
FROM blended AS b
JOIN strongest AS s USING (customer_id, product_id)
QUALIFY recommendation_rank <= getvariable('candidates_per_customer')
