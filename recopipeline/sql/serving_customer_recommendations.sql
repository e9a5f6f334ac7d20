-- serving_customer_recommendations: the rows the read API serves. Every customer's top N as ranked by the blend
-- (with its A/B variant), and for customers without rows of their own a cold-start list per variant
-- (customer_id '__cold_start__'): the overall most popular available products, scores scaled to 0..1; and the
-- trending list per variant (customer_id '__trending__', product_trending), scores scaled to 0..1.
-- `serving_variants` (one row per configured variant) is created by the publish step.
WITH customer_rows AS (
    SELECT customer_id,
           variant,
           recommendation_rank AS rank,
           product_id,
           product_name,
           recommendation_type,
           recommendation_score AS score,
           evidence
    FROM customer_top_recommendations
),
cold_start AS (
    -- the first top_n of the products still available (the hourly publication drops one sold out since)
    SELECT '__cold_start__' AS customer_id,
           v.variant,
           row_number() OVER (PARTITION BY v.variant ORDER BY p.popularity_rank) AS rank,
           c.product_id,
           coalesce(c.product_name, c.product_id) AS product_name,
           'popular' AS recommendation_type,
           coalesce(round(p.popularity_score / nullif(max(p.popularity_score) OVER (PARTITION BY v.variant), 0), 9), 0)
               AS score,
           'popular:all' AS evidence
    FROM product_popularity AS p
    JOIN products AS c USING (product_key)
    CROSS JOIN serving_variants AS v
    WHERE p.segment = 'all' AND c.is_active AND (c.stock_quantity > 0 OR c.stock_quantity IS NULL)
    QUALIFY row_number() OVER (PARTITION BY v.variant ORDER BY p.popularity_rank) <= getvariable('top_n')
),
trending AS (
    SELECT '__trending__' AS customer_id,
           v.variant,
           t.trending_rank AS rank,
           c.product_id,
           coalesce(c.product_name, c.product_id) AS product_name,
           'trending' AS recommendation_type,
           round(t.trending_score / max(t.trending_score) OVER (PARTITION BY v.variant), 9) AS score,
           format('trending:{:.1f}x', t.trending_score) AS evidence
    FROM product_trending AS t
    JOIN products AS c USING (product_key)
    CROSS JOIN serving_variants AS v
)
SELECT * FROM customer_rows
UNION ALL
SELECT * FROM cold_start
UNION ALL
SELECT * FROM trending
