-- shard_product_buyers: one bucket's buyers of each product up to the as-of time (lib/shards.py): how many of the
-- bucket's customers ordered it, and how many of those in two or more orders. A customer is in one bucket, so the
-- buckets' counts add up to the counts over everyone: product_repurchase_rates' buyers and repeat buyers,
-- complementary_products' buyers and the diagonal of EASE's Gram matrix XᵀX (the products' buyers), which also
-- chooses the products that enter the model.
WITH buyers AS (
    SELECT product_key, customer_key, count(DISTINCT order_id) AS orders
    FROM orders
    WHERE order_timestamp <= getvariable('as_of')
    GROUP BY product_key, customer_key
)
SELECT product_key,
       count(*)                            AS buyers,
       count(*) FILTER (WHERE orders >= 2) AS repeat_buyers
FROM buyers
GROUP BY product_key
