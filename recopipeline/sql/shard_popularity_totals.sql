-- shard_popularity_totals: one bucket's part of product_popularity's totals (lib/shards.py), per segment and
-- overall ('all'): the exact DECIMAL sum of the weighted scores of the bucket's customers and how many of them
-- bought the product within popular_window_days. Every customer is in one bucket, so the buckets' parts add up to
-- the totals over everyone (sql/product_popularity_from_shards.sql); nothing is ranked or cut here.
SELECT CASE WHEN grouping(customer_segment) = 1 THEN 'all' ELSE customer_segment END AS segment,
       product_key,
       sum(weighted_score) AS weighted_score,
       count(*) FILTER (
           WHERE last_purchase_at > getvariable('as_of') - to_days(getvariable('popular_window_days'))
       ) AS recent_buyers
FROM customer_behavior_comprehensive
GROUP BY GROUPING SETS ((product_key), (customer_segment, product_key))
