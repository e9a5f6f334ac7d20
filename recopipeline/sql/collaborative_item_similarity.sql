-- collaborative_item_similarity: "customers who liked this also liked": cosine similarity between products
-- over customers' affinities (log-damped), top-K neighbours per product. Each customer contributes only
-- their `cf_items_per_customer` strongest products (collaborative_strongest_products, made before the stage),
-- which bounds the pairs one heavy customer can add.
-- Sums run over DECIMAL, which is exact: a rerun gives the same bits however the threads split the rows.
-- The stage computes these rows with a compiled loop (lib/collaborative.py); this file is its specification,
-- and recopipeline_tests/test_collaborative.py requires both to give the same rows.
WITH co_liked AS (
    SELECT x.product_key AS product_key_1,
           y.product_key AS product_key_2,
           sum((x.affinity * y.affinity)::DECIMAL(38, 12))::DOUBLE AS dot,
           count(*)                                                AS common_customers
    FROM collaborative_strongest_products AS x
    JOIN collaborative_strongest_products AS y ON x.customer_key = y.customer_key AND x.product_key <> y.product_key
    GROUP BY x.product_key, y.product_key
    HAVING count(*) >= getvariable('cf_min_common_customers')
),
norms AS (
    SELECT DISTINCT product_key, norm FROM collaborative_strongest_products
)
SELECT c.product_key_1,
       c.product_key_2,
       c.common_customers,
       round(c.dot / (n1.norm * n2.norm), 9) AS cf_similarity,
       row_number() OVER (
           PARTITION BY c.product_key_1
           ORDER BY round(c.dot / (n1.norm * n2.norm), 9) DESC, c.common_customers DESC, c.product_key_2
       ) AS cf_rank
FROM co_liked AS c
JOIN norms AS n1 ON n1.product_key = c.product_key_1
JOIN norms AS n2 ON n2.product_key = c.product_key_2
QUALIFY cf_rank <= getvariable('cf_top_k')
