-- collaborative_strongest_products: each customer's `cf_items_per_customer` strongest products (log-damped
-- affinity) and every product's norm over them, for collaborative_item_similarity, which reads them once and
-- aggregates the item pairs per batch of anchor products.
-- The norms sum over DECIMAL, which is exact: a rerun gives the same bits however the threads split the rows.
WITH strongest AS (
    SELECT customer_key, product_key, ln(1 + weighted_affinity_score) AS affinity
    FROM customer_product_affinity
    WHERE weighted_affinity_score > 0
    QUALIFY row_number() OVER (
        PARTITION BY customer_key ORDER BY weighted_affinity_score DESC, product_key
    ) <= getvariable('cf_items_per_customer')
)
SELECT customer_key,
       product_key,
       affinity,
       sqrt(sum((affinity * affinity)::DECIMAL(38, 12)) OVER (PARTITION BY product_key)::DOUBLE) AS norm
FROM strongest
