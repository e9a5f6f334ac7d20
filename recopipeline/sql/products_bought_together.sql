-- products_bought_together: product pairs that appear in the same order at least `min_support` times,
-- in both directions, with a correct Jaccard similarity:
--   co_purchase_similarity = orders with both / orders with either = n12 / (n1 + n2 - n12)
-- and the directional confidence n12 / n1. Orders with more than `max_basket_lines` products (wholesale or
-- test orders) are left out of every count, so the pair count stays linear in ordinary baskets.
WITH baskets AS (
    SELECT order_id, product_key
    FROM orders
    WHERE order_timestamp <= getvariable('as_of')
    QUALIFY count(*) OVER (PARTITION BY order_id) <= getvariable('max_basket_lines')
),
orders_per_product AS (
    SELECT product_key, count(*) AS orders_with_product
    FROM baskets
    GROUP BY product_key
),
pairs AS (
    SELECT a.product_key AS product_key_1, b.product_key AS product_key_2, count(*) AS co_purchase_count
    FROM baskets AS a
    JOIN baskets AS b ON a.order_id = b.order_id AND a.product_key < b.product_key
    GROUP BY a.product_key, b.product_key
    HAVING count(*) >= getvariable('min_support')
),
both_directions AS (
    SELECT product_key_1, product_key_2, co_purchase_count FROM pairs
    UNION ALL
    SELECT product_key_2, product_key_1, co_purchase_count FROM pairs
)
SELECT d.product_key_1,
       d.product_key_2,
       d.co_purchase_count,
       n1.orders_with_product AS orders_with_product_1,
       n2.orders_with_product AS orders_with_product_2,
       round(d.co_purchase_count / (n1.orders_with_product + n2.orders_with_product - d.co_purchase_count), 9)
           AS co_purchase_similarity,
       round(d.co_purchase_count / n1.orders_with_product, 9) AS confidence
FROM both_directions AS d
JOIN orders_per_product AS n1 ON n1.product_key = d.product_key_1
JOIN orders_per_product AS n2 ON n2.product_key = d.product_key_2
