-- collaborative_item_similarity: "customers who liked this also liked": cosine similarity between products
-- over customers' affinities (log-damped), top-K neighbours per product. Each customer contributes only
-- their `cf_items_per_customer` strongest products, which bounds the pairs one heavy customer can add.
-- Sums run over DECIMAL, which is exact: a rerun gives the same bits however the threads split the rows.
WITH strongest AS (
    SELECT customer_id, product_id, ln(1 + weighted_affinity_score) AS affinity
    FROM customer_product_affinity
    WHERE weighted_affinity_score > 0
    QUALIFY row_number() OVER (
        PARTITION BY customer_id ORDER BY weighted_affinity_score DESC, product_id
    ) <= getvariable('cf_items_per_customer')
),
norms AS (
    SELECT product_id, sqrt(sum((affinity * affinity)::DECIMAL(38, 12))::DOUBLE) AS norm
    FROM strongest
    GROUP BY product_id
),
co_liked AS (
    SELECT x.product_id AS product_id_1,
           y.product_id AS product_id_2,
           sum((x.affinity * y.affinity)::DECIMAL(38, 12))::DOUBLE AS dot,
           count(*)                                                AS common_customers
    FROM strongest AS x
    JOIN strongest AS y ON x.customer_id = y.customer_id AND x.product_id <> y.product_id
    -- the anchor products of this pass: all of them, or one batch (lib/stages.py, write_stage)
    WHERE x.product_id IN (SELECT product_id FROM anchor_products)
    GROUP BY x.product_id, y.product_id
    HAVING count(*) >= getvariable('cf_min_common_customers')
)
SELECT c.product_id_1,
       c.product_id_2,
       c.common_customers,
       round(c.dot / (n1.norm * n2.norm), 9) AS cf_similarity,
       row_number() OVER (
           PARTITION BY c.product_id_1
           ORDER BY round(c.dot / (n1.norm * n2.norm), 9) DESC, c.common_customers DESC, c.product_id_2
       ) AS cf_rank
FROM co_liked AS c
JOIN norms AS n1 ON n1.product_id = c.product_id_1
JOIN norms AS n2 ON n2.product_id = c.product_id_2
QUALIFY cf_rank <= getvariable('cf_top_k')
