-- complementary_products: directional A -> B for pairs bought together, scored from the pair's Jaccard
-- similarity and sequential purchase: the share of A's buyers who bought B in a later order.
--   complementary_score = 0.6 x co_purchase_similarity + 0.4 x sequential_rate
-- Purchases are first reduced to one row per (customer, product), so the join never fans out over
-- order lines (the tutorial joins every order line of A to every order line of B).
WITH first_last AS (
    SELECT customer_id, product_id,
           min(order_timestamp) AS first_bought_at,
           max(order_timestamp) AS last_bought_at
    FROM orders
    WHERE order_timestamp <= getvariable('as_of')
    GROUP BY customer_id, product_id
),
buyers AS (
    SELECT product_id, count(*) AS buyer_count FROM first_last GROUP BY product_id
),
sequential AS (
    SELECT t.product_id_1, t.product_id_2, count(*) AS sequential_purchase_count
    FROM products_bought_together AS t
    JOIN first_last AS a ON a.product_id = t.product_id_1
    JOIN first_last AS b ON b.customer_id = a.customer_id AND b.product_id = t.product_id_2
    WHERE b.last_bought_at > a.first_bought_at
    GROUP BY t.product_id_1, t.product_id_2
),
scored AS (
    SELECT t.product_id_1,
           t.product_id_2,
           t.co_purchase_count,
           t.co_purchase_similarity,
           coalesce(s.sequential_purchase_count, 0)                          AS sequential_purchase_count,
           n.buyer_count                                                     AS buyers_of_product_1,
           round(coalesce(s.sequential_purchase_count, 0) / n.buyer_count, 9) AS sequential_rate
    FROM products_bought_together AS t
    JOIN buyers AS n ON n.product_id = t.product_id_1
    LEFT JOIN sequential AS s USING (product_id_1, product_id_2)
)
SELECT *,
       round(0.6 * co_purchase_similarity + 0.4 * sequential_rate, 9) AS complementary_score,
       row_number() OVER (
           PARTITION BY product_id_1
           ORDER BY round(0.6 * co_purchase_similarity + 0.4 * sequential_rate, 9) DESC, co_purchase_count DESC, product_id_2
       ) AS complementary_rank
FROM scored
QUALIFY complementary_rank <= getvariable('complementary_top_k')
