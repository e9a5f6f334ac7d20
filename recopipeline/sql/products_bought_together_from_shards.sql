-- products_bought_together_from_shards: the rows of sql/products_bought_together.sql from the buckets' partial
-- counts (shard_order_products, shard_basket_pairs; orders bucketed by order_id; lib/shards.py). Pairs are kept
-- when their count summed over every bucket reaches min_support: pruning a bucket's rare pairs before the sum would
-- lose pairs that are frequent only over all of them. Apart from `orders_per_product` and `pairs` this is
-- sql/products_bought_together.sql: change both together (recopipeline_tests/test_shards.py requires the same rows).
WITH orders_per_product AS (
    SELECT product_key, sum(basket_orders)::BIGINT AS orders_with_product
    FROM shard_order_products
    GROUP BY product_key
    HAVING sum(basket_orders) > 0
),
pairs AS (
    SELECT product_key_1, product_key_2, sum(co_purchase_count)::BIGINT AS co_purchase_count
    FROM shard_basket_pairs
    GROUP BY product_key_1, product_key_2
    HAVING sum(co_purchase_count) >= getvariable('min_support')
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
