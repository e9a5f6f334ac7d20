-- collaborative_item_similarity_from_shards: the rows of sql/collaborative_item_similarity.sql (the stage's
-- specification; lib/collaborative.py computes the same rows) from the buckets' partial sums (lib/shards.py):
-- the dot products and common customers of every pair summed over the buckets (exact DECIMAL sums, so the bits of
-- one pass), kept when the summed count reaches cf_min_common_customers, in both directions (x·y = y·x); the norms
-- summed over the buckets, then square-rooted; the top cf_top_k per product ranked only then. Apart from
-- `co_liked` and `norms` this is sql/collaborative_item_similarity.sql: change both together
-- (recopipeline_tests/test_shards.py requires the same rows).
WITH summed AS (
    SELECT product_key_1, product_key_2, sum(dot)::DOUBLE AS dot, sum(common_customers)::BIGINT AS common_customers
    FROM shard_collaborative_pairs
    GROUP BY product_key_1, product_key_2
    HAVING sum(common_customers) >= getvariable('cf_min_common_customers')
),
co_liked AS (
    SELECT product_key_1, product_key_2, dot, common_customers FROM summed
    UNION ALL
    SELECT product_key_2, product_key_1, dot, common_customers FROM summed
),
norms AS (
    SELECT product_key, sqrt(sum(norm_squared)::DOUBLE) AS norm
    FROM shard_collaborative_norms
    GROUP BY product_key
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
