-- shard_order_products: per product, one bucket's orders up to the as-of time (lib/shards.py), where the orders
-- are bucketed by their order_id (`bucket_orders`), not by customer: an order counts once even if its lines name
-- several customers. basket_orders: the orders of at most max_basket_lines lines that hold the product
-- (products_bought_together's orders per product); recent_orders: the orders that hold it within
-- repurchase_trend_days (product_repurchase_rates' recent orders). The buckets' counts add up to the counts over
-- every order.
WITH lines AS (
    SELECT order_id, product_key, order_timestamp
    FROM bucket_orders
    WHERE order_timestamp <= getvariable('as_of')
),
baskets AS (
    SELECT order_id, product_key
    FROM lines
    QUALIFY count(*) OVER (PARTITION BY order_id) <= getvariable('max_basket_lines')
),
in_baskets AS (
    SELECT product_key, count(*) AS basket_orders FROM baskets GROUP BY product_key
),
recent AS (
    SELECT product_key, count(DISTINCT order_id) AS recent_orders
    FROM lines
    WHERE order_timestamp > getvariable('as_of') - to_days(getvariable('repurchase_trend_days'))
    GROUP BY product_key
)
SELECT product_key,
       coalesce(b.basket_orders, 0) AS basket_orders,
       coalesce(r.recent_orders, 0) AS recent_orders
FROM in_baskets AS b
FULL JOIN recent AS r USING (product_key)
