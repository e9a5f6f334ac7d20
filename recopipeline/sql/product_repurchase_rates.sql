-- product_repurchase_rates: how likely each bought product is to be bought again, for the "buy it again"
-- (repurchase) strategy of product_recommendations.
--
-- repeat_rate: the share of the product's buyers who ordered it in two or more orders, smoothed towards 1/2
--   as (repeat buyers + 1) / (buyers + 2), so that a product with few buyers is neither certain nor hopeless.
-- recent_trend: the product's orders in the last repurchase_trend_days, over those of the product ordered most
--   in that window, square-rooted (0..1): what sells now is re-ordered now.
-- repurchase_factor = repeat_rate ^ repurchase_rate_power * (1 + repurchase_trend_weight * recent_trend);
--   the strategy multiplies a customer's own recency-weighted orders of the product by it.
WITH lines AS (
    SELECT customer_key, product_key, order_id, order_timestamp
    FROM orders
    WHERE order_timestamp <= getvariable('as_of')
),
buyers AS (
    SELECT product_key, customer_key, count(DISTINCT order_id) AS orders
    FROM lines
    GROUP BY product_key, customer_key
),
rates AS (
    SELECT product_key,
           count(*)                               AS buyers,
           count(*) FILTER (WHERE orders >= 2)    AS repeat_buyers
    FROM buyers
    GROUP BY product_key
),
recent AS (
    SELECT product_key, count(DISTINCT order_id) AS recent_orders
    FROM lines
    WHERE order_timestamp > getvariable('as_of') - to_days(getvariable('repurchase_trend_days'))
    GROUP BY product_key
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
