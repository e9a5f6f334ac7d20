-- product_repurchase_rates_from_shards: the rows of sql/product_repurchase_rates.sql from the buckets' partial
-- counts (lib/shards.py): buyers and repeat buyers from shard_product_buyers (bucketed by customer), recent orders
-- from shard_order_products (bucketed by order). The trend is scaled by the product ordered most recently over
-- all buckets, so it is computed only after the sum. Apart from `rates` and `recent` this is
-- sql/product_repurchase_rates.sql: change both together (recopipeline_tests/test_shards.py requires the same rows).
WITH rates AS (
    SELECT product_key,
           sum(buyers)::BIGINT        AS buyers,
           sum(repeat_buyers)::BIGINT AS repeat_buyers
    FROM shard_product_buyers
    GROUP BY product_key
),
recent AS (
    SELECT product_key, sum(recent_orders)::BIGINT AS recent_orders
    FROM shard_order_products
    GROUP BY product_key
    HAVING sum(recent_orders) > 0
),
scored AS (
    SELECT r.product_key,
           r.buyers,
           r.repeat_buyers,
           (r.repeat_buyers + 1) / (r.buyers + 2)                             AS repeat_rate,
           coalesce(n.recent_orders, 0)                                       AS recent_orders,
           coalesce(sqrt(n.recent_orders / max(n.recent_orders) OVER ()), 0) AS recent_trend
    FROM rates AS r
    LEFT JOIN recent AS n USING (product_key)
)
SELECT product_key,
       buyers,
       repeat_buyers,
       round(repeat_rate, 9)  AS repeat_rate,
       recent_orders,
       round(recent_trend, 9) AS recent_trend,
       round(pow(repeat_rate, getvariable('repurchase_rate_power'))
             * (1 + getvariable('repurchase_trend_weight') * recent_trend), 9) AS repurchase_factor
FROM scored
