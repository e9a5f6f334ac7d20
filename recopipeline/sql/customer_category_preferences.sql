-- customer_category_preferences: each customer's categories, ranked by recency-weighted interest.
-- Interest adds up the per-(customer, product) sums of customer_behavior_comprehensive (exact DECIMAL sums, so
-- the same bits as summing the events). Revenue comes from the orders, aggregated per (customer, category)
-- before the join (no fan-out). Ties rank by purchases, then category name, so the rank is deterministic.
WITH category_revenue AS (
    SELECT o.customer_key, p.category, sum(o.line_value::DECIMAL(38, 12))::DOUBLE AS category_revenue
    FROM orders AS o
    JOIN products AS p USING (product_key)
    WHERE o.order_timestamp <= getvariable('as_of')
    GROUP BY o.customer_key, p.category
),
interest AS (
    SELECT customer_key,
           category,
           count(*)                                     AS products_interacted,  -- one row per product
           sum(interaction_score)::DOUBLE               AS total_category_score,
           round(sum(weighted_score)::DOUBLE, 6)        AS weighted_category_score,
           sum(purchase_count)::BIGINT                  AS category_purchases
    FROM customer_behavior_comprehensive
    GROUP BY customer_key, category
)
SELECT i.*,
       coalesce(r.category_revenue, 0) AS category_revenue,
       row_number() OVER (
           PARTITION BY i.customer_key
           ORDER BY i.weighted_category_score DESC, i.category_purchases DESC, i.category
       ) AS category_rank
FROM interest AS i
LEFT JOIN category_revenue AS r USING (customer_key, category)
