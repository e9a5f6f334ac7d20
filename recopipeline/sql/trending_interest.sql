-- trending_interest: product_trending's interest per product: the exact DECIMAL sums of the event weights of the
-- interactions in the last 24 hours (recent) and in the 7 days before (baseline). Made before
-- sql/product_trending.sql, which scores and ranks them. Over a customer bucket this is the bucket's part (the
-- partial shard_trending_interest, lib/shards.py); the buckets' parts add up to the interest over everyone.
WITH scored AS (
    SELECT product_key,
           interaction_timestamp > getvariable('as_of') - INTERVAL 24 HOUR AS recent,
           CASE interaction_type
               WHEN 'purchase'    THEN getvariable('weight_purchase')
               WHEN 'cart_add'    THEN getvariable('weight_cart_add')
               WHEN 'click'       THEN getvariable('weight_click')
               WHEN 'view'        THEN getvariable('weight_view')
               WHEN 'cart_remove' THEN getvariable('weight_cart_remove')
               ELSE 0
           END::DECIMAL(38, 12) AS interaction_score
    FROM customer_interactions
    WHERE interaction_timestamp <= getvariable('as_of')
      AND interaction_timestamp > getvariable('as_of') - INTERVAL 8 DAY
)
SELECT product_key,
       sum(interaction_score) FILTER (WHERE recent)     AS recent_score,
       sum(interaction_score) FILTER (WHERE NOT recent) AS baseline_score
FROM scored
GROUP BY product_key
