-- popularity_totals: product_popularity's totals, per segment and overall ('all'): the exact DECIMAL sum of the
-- weighted scores of the customers in customer_behavior_comprehensive and how many of them bought the product within
-- popular_window_days. Made before sql/product_popularity.sql, which ranks and cuts them. Every customer is in one
-- bucket, so over a customer bucket this is the bucket's part of the totals (the partial shard_popularity_totals,
-- lib/shards.py), and the buckets' parts add up to the totals over everyone; nothing is ranked or cut here.
SELECT CASE WHEN grouping(customer_segment) = 1 THEN 'all' ELSE customer_segment END AS segment,
       product_key,
       sum(weighted_score) AS weighted_score,
       count(*) FILTER (
           WHERE last_purchase_at > getvariable('as_of') - to_days(getvariable('popular_window_days'))
       ) AS recent_buyers
FROM customer_behavior_comprehensive
GROUP BY GROUPING SETS ((product_key), (customer_segment, product_key))
