-- shard_basket_pairs: one bucket's pairs of products in the same order (lib/shards.py), orders bucketed by
-- order_id (`bucket_orders`), each pair once (product_key_1 < product_key_2), orders of more than
-- max_basket_lines lines left out as in sql/products_bought_together.sql. No min_support here: a pair too rare in
-- every bucket can still be frequent over all of them, so only the summed counts are compared with it.
WITH baskets AS (
    SELECT order_id, product_key
    FROM bucket_orders
    WHERE order_timestamp <= getvariable('as_of')
    QUALIFY count(*) OVER (PARTITION BY order_id) <= getvariable('max_basket_lines')
)
SELECT a.product_key AS product_key_1, b.product_key AS product_key_2, count(*) AS co_purchase_count
FROM baskets AS a
JOIN baskets AS b ON a.order_id = b.order_id AND a.product_key < b.product_key
GROUP BY a.product_key, b.product_key
