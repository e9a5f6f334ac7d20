-- product_trending: the available products whose interest grows, as of the as-of time, best first.
-- Interest is the interactions' weighted score (the event weights of customer_behavior_comprehensive, without
-- recency): `recent_score` over the last 24 hours, `baseline_daily_score` the daily mean over the 7 days before.
-- trending_score = (recent + prior) / (baseline + prior), with prior = `trending_prior`: a product needs a
-- day's interest well beyond its usual, in real numbers, to trend (one view of a product nobody looked at
-- scores (1 + 10) / 10 = 1.1; 300 a day against 100 scores 2.8). Only products that grow (score > 1) are listed,
-- the first `trending_products` of them; ties by recent interest, then product key.
WITH interest AS (  -- sql/trending_interest.sql, made first: one row per product, or per (bucket, product)
    SELECT product_key,
           coalesce(sum(recent_score), 0)::DOUBLE       AS recent_score,
           coalesce(sum(baseline_score), 0)::DOUBLE / 7 AS baseline_daily_score
    FROM trending_interest
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
