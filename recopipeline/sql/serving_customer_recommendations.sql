-- serving_customer_recommendations: the rows the read API serves. Every customer's top N as ranked by the blend
-- (with its A/B variant), and for customers without rows of their own a cold-start list per variant
-- (customer_id '__cold_start__'): the overall most popular available products, scores scaled to 0..1.
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
    SELECT '__cold_start__' AS customer_id,
           v.variant,
           p.popularity_rank AS rank,
           c.product_id,
           coalesce(c.product_name, c.product_id) AS product_name,
           'popular' AS recommendation_type,
           coalesce(round(p.popularity_score / nullif(max(p.popularity_score) OVER (PARTITION BY v.variant), 0), 9), 0)
               AS score,
           'popular:all' AS evidence
    FROM product_popularity AS p
    JOIN products AS c USING (product_key)
    CROSS JOIN serving_variants AS v
    WHERE p.segment = 'all' AND p.popularity_rank <= getvariable('top_n')
)
SELECT * FROM customer_rows
UNION ALL
SELECT * FROM cold_start
