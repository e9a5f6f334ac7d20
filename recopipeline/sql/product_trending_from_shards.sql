-- product_trending_from_shards: the rows of sql/product_trending.sql from the buckets' partial interest
-- (shard_trending_interest; lib/shards.py): exact DECIMAL sums of exact sums, then scored, ranked and cut as one
-- pass over every customer's interactions would. Apart from `interest` this is sql/product_trending.sql: change
-- both together (recopipeline_tests/test_shards.py requires the same rows).
WITH interest AS (
    SELECT product_key,
           coalesce(sum(recent_score), 0)::DOUBLE       AS recent_score,
           coalesce(sum(baseline_score), 0)::DOUBLE / 7 AS baseline_daily_score
    FROM shard_trending_interest
    GROUP BY product_key
),
trending AS (
    SELECT i.product_key, i.recent_score, i.baseline_daily_score,
           (i.recent_score + getvariable('trending_prior'))
               / (i.baseline_daily_score + getvariable('trending_prior')) AS trending_score
    FROM interest AS i
    JOIN products AS p USING (product_key)
    WHERE p.is_active AND (p.stock_quantity > 0 OR p.stock_quantity IS NULL)
)
SELECT product_key, recent_score, baseline_daily_score, trending_score,
       row_number() OVER (ORDER BY trending_score DESC, recent_score DESC, product_key) AS trending_rank
FROM trending
WHERE trending_score > 1
QUALIFY trending_rank <= getvariable('trending_products')
