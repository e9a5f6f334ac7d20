-- collaborative_item_similarity: "customers who liked this also liked": cosine similarity between products
-- over customers' affinities (log-damped), top-K neighbours per product. Each customer contributes only
-- their `cf_items_per_customer` strongest products, which bounds the pairs one heavy customer can add.
-- Customers and products are numbered first (products in id order, so comparing numbers compares ids) and the
-- pair join, sums and ranking run on the numbers; the ids come back for the final rows only.
-- Sums run over DECIMAL, which is exact: a rerun gives the same bits however the threads split the rows.
WITH liked AS (
    SELECT customer_id, product_id, weighted_affinity_score
    FROM customer_product_affinity
    WHERE weighted_affinity_score > 0
),
product_numbers AS (
    SELECT product_id, row_number() OVER (ORDER BY product_id) AS product
    FROM (SELECT DISTINCT product_id FROM liked)
),
customer_numbers AS (
    SELECT customer_id, row_number() OVER () AS customer
    FROM (SELECT DISTINCT customer_id FROM liked)
),
strongest AS (
    SELECT c.customer, p.product, ln(1 + l.weighted_affinity_score) AS affinity
    FROM liked AS l
    JOIN customer_numbers AS c USING (customer_id)
    JOIN product_numbers AS p USING (product_id)
    QUALIFY row_number() OVER (
        PARTITION BY c.customer ORDER BY l.weighted_affinity_score DESC, p.product
    ) <= getvariable('cf_items_per_customer')
),
norms AS (
    SELECT product, sqrt(sum((affinity * affinity)::DECIMAL(38, 12))::DOUBLE) AS norm
    FROM strongest
    GROUP BY product
),
-- the anchor products of this pass: all of them, or one batch (lib/stages.py, write_stage)
marked AS (
    SELECT s.*, s.product IN (SELECT product FROM product_numbers SEMI JOIN anchor_products USING (product_id))
               AS is_anchor
    FROM strongest AS s
),
-- each unordered pair once (product_a < product_b): the dot product and the common customers are symmetric,
-- so the two directions are the same sums (x * y = y * x exactly) and half the join
pairs AS (
    SELECT x.product AS product_a,
           y.product AS product_b,
           bool_or(x.is_anchor)                                    AS a_is_anchor,
           bool_or(y.is_anchor)                                    AS b_is_anchor,
           sum((x.affinity * y.affinity)::DECIMAL(38, 12))::DOUBLE AS dot,
           count(*)                                                AS common_customers
    FROM marked AS x
    JOIN marked AS y ON x.customer = y.customer AND x.product < y.product
    WHERE x.is_anchor OR y.is_anchor
    GROUP BY x.product, y.product
    HAVING count(*) >= getvariable('cf_min_common_customers')
),
co_liked AS (
    SELECT product_a AS product_1, product_b AS product_2, dot, common_customers FROM pairs WHERE a_is_anchor
    UNION ALL
    SELECT product_b AS product_1, product_a AS product_2, dot, common_customers FROM pairs WHERE b_is_anchor
),
ranked AS (
    SELECT c.product_1,
           c.product_2,
           c.common_customers,
           round(c.dot / (n1.norm * n2.norm), 9) AS cf_similarity,
           row_number() OVER (
               PARTITION BY c.product_1
               ORDER BY round(c.dot / (n1.norm * n2.norm), 9) DESC, c.common_customers DESC, c.product_2
           ) AS cf_rank
    FROM co_liked AS c
    JOIN norms AS n1 ON n1.product = c.product_1
    JOIN norms AS n2 ON n2.product = c.product_2
    QUALIFY cf_rank <= getvariable('cf_top_k')
)
SELECT p1.product_id AS product_id_1,
       p2.product_id AS product_id_2,
       r.common_customers,
       r.cf_similarity,
       r.cf_rank
FROM ranked AS r
JOIN product_numbers AS p1 ON p1.product = r.product_1
JOIN product_numbers AS p2 ON p2.product = r.product_2
