-- shard_collaborative_norms: one bucket's part of each product's squared norm over the customers' strongest
-- products (collaborative_strongest_products of the bucket's customers; lib/shards.py): the exact DECIMAL sum of
-- affinity². The norm itself is a sum over every customer; it is taken (square root) only after the buckets'
-- parts are added up (sql/collaborative_item_similarity_from_shards.sql).
SELECT product_key, sum((affinity * affinity)::DECIMAL(38, 12)) AS norm_squared
FROM collaborative_strongest_products
GROUP BY product_key
