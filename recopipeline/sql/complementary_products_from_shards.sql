-- complementary_products_from_shards: the rows of sql/complementary_products.sql from the buckets' partial counts
-- (shard_product_buyers, shard_purchase_pairs; lib/shards.py) and the pairs bought together (computed before it
-- from the summed basket counts). The sequential counts are summed over every bucket before they are joined to the
-- pairs, scored and cut to complementary_top_k. Apart from `buyers` and `sequential` this is
-- sql/complementary_products.sql: change both together (recopipeline_tests/test_shards.py requires the same rows).
WITH buyers AS (
    SELECT product_key, sum(buyers)::BIGINT AS buyer_count FROM shard_product_buyers GROUP BY product_key
),
summed AS (
    SELECT product_key_1, product_key_2, sum(later_2)::BIGINT AS later_2, sum(later_1)::BIGINT AS later_1
    FROM shard_purchase_pairs
    GROUP BY product_key_1, product_key_2
),
sequential AS (
    -- each bought product with each one bought again later by the same customer, in both directions
    SELECT product_key_1, product_key_2, later_2 AS sequential_purchase_count FROM summed WHERE later_2 > 0
    UNION ALL
    SELECT product_key_2, product_key_1, later_1 FROM summed WHERE later_1 > 0
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
