-- complementary_products: directional A -> B for pairs bought together, scored from the pair's Jaccard
-- similarity and sequential purchase: the share of A's buyers who bought B in a later order.
--   complementary_score = 0.6 x co_purchase_similarity + 0.4 x sequential_rate
-- Purchases are first reduced to one row per (customer, product), so the join never fans out over
-- order lines (the tutorial joins every order line of A to every order line of B).
WITH first_last AS (
    SELECT customer_key, product_key,
           min(order_timestamp) AS first_bought_at,
           max(order_timestamp) AS last_bought_at
    FROM orders
    WHERE order_timestamp <= getvariable('as_of')
    GROUP BY customer_key, product_key
),
buyers AS (
    SELECT product_key, count(*) AS buyer_count FROM first_last GROUP BY product_key
),
sequential AS (
    -- per customer, each bought product with each one bought again later, kept for the pairs bought together
    SELECT a.product_key AS product_key_1, b.product_key AS product_key_2, count(*) AS sequential_purchase_count
    FROM first_last AS a
    JOIN first_last AS b ON b.customer_key = a.customer_key AND b.last_bought_at > a.first_bought_at
    SEMI JOIN products_bought_together AS t ON t.product_key_1 = a.product_key AND t.product_key_2 = b.product_key
    GROUP BY a.product_key, b.product_key
),
scored AS (
    SELECT t.product_key_1,
           t.product_key_2,
           t.co_purchase_count,
           t.co_purchase_similarity,
           coalesce(s.sequential_purchase_count, 0)                          AS sequential_purchase_count,
           n.buyer_count                                                     AS buyers_of_product_1,
           round(coalesce(s.sequential_purchase_count, 0) / n.buyer_count, 9) AS sequential_rate
    FROM products_bought_together AS t
    JOIN buyers AS n ON n.product_key = t.product_key_1
    LEFT JOIN sequential AS s USING (product_key_1, product_key_2)
)
SELECT *,
       round(0.6 * co_purchase_similarity + 0.4 * sequential_rate, 9) AS complementary_score,
       row_number() OVER (
           PARTITION BY product_key_1
           ORDER BY round(0.6 * co_purchase_similarity + 0.4 * sequential_rate, 9) DESC, co_purchase_count DESC, product_key_2
       ) AS complementary_rank
FROM scored
QUALIFY complementary_rank <= getvariable('complementary_top_k')
