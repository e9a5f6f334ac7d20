-- customer_repurchase_scores: the "buy it again" score of each product a customer ordered up to the as-of time:
-- each order of it weighted by its age (0.5 per repurchase_half_life_days), summed, times the product's
-- repurchase_factor (product_repurchase_rates: repeat-buyer rate and recent trend); `orders` counts the orders.
SELECT o.customer_key,
       o.product_key,
       sum(pow(0.5, date_diff('second', o.ordered_at, getvariable('as_of')) / 86400.0
                    / getvariable('repurchase_half_life_days'))::DECIMAL(38, 12))::DOUBLE
           * any_value(r.repurchase_factor) AS raw_score,
       count(*) AS orders
FROM (
    SELECT customer_key, product_key, order_id, max(order_timestamp) AS ordered_at
    FROM orders
    WHERE order_timestamp <= getvariable('as_of')
    GROUP BY customer_key, product_key, order_id
) AS o
JOIN product_repurchase_rates AS r USING (product_key)
GROUP BY o.customer_key, o.product_key
