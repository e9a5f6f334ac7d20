-- shard_purchase_pairs: one bucket's pairs of products bought by the same customer up to the as-of time
-- (lib/shards.py), each pair once (product_key_1 < product_key_2): how many of the bucket's customers bought both
-- (an off-diagonal entry of EASE's Gram matrix XᵀX), and of those, how many ordered product 2 after first buying
-- product 1 (later_2) and product 1 after first buying product 2 (later_1): complementary_products' sequential
-- purchases in both directions. Nothing is filtered by support here: the buckets' counts add up to the counts
-- over everyone, and only those are compared with thresholds.
WITH first_last AS (
    SELECT customer_key, product_key,
           min(order_timestamp) AS first_bought_at,
           max(order_timestamp) AS last_bought_at
    FROM orders
    WHERE order_timestamp <= getvariable('as_of')
    GROUP BY customer_key, product_key
)
SELECT a.product_key                                                   AS product_key_1,
       b.product_key                                                   AS product_key_2,
       count(*)                                                        AS customers,
       count(*) FILTER (WHERE b.last_bought_at > a.first_bought_at)    AS later_2,
       count(*) FILTER (WHERE a.last_bought_at > b.first_bought_at)    AS later_1
FROM first_last AS a
JOIN first_last AS b ON b.customer_key = a.customer_key AND a.product_key < b.product_key
GROUP BY a.product_key, b.product_key
