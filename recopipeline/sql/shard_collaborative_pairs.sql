-- shard_collaborative_pairs: one bucket's co-occurrence sums of collaborative_item_similarity (lib/shards.py):
-- per pair of products among the bucket's customers' strongest products (each pair once, product_key_1 <
-- product_key_2), the exact DECIMAL sum of anchor affinity x other affinity and the customers who hold both.
-- Before any pruning: cf_min_common_customers and cf_top_k apply to the sums over every bucket only
-- (sql/collaborative_item_similarity_from_shards.sql), since a pair below them in each bucket can pass over all.
SELECT x.product_key                                     AS product_key_1,
       y.product_key                                     AS product_key_2,
       sum((x.affinity * y.affinity)::DECIMAL(38, 12))   AS dot,
       count(*)                                          AS common_customers
FROM collaborative_strongest_products AS x
JOIN collaborative_strongest_products AS y ON x.customer_key = y.customer_key AND x.product_key < y.product_key
GROUP BY x.product_key, y.product_key
