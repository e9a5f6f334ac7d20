-- customer_product_affinity: how much each customer likes each product they interacted with.
-- weighted_affinity_score = sum of event weight x recency weight; each interaction counts once.
-- Sums run over DECIMAL, which is exact: a rerun gives the same bits however the threads split the rows.
WITH scored AS (
    SELECT customer_id,
           product_id,
           any_value(category)                                       AS category,
           count(*) FILTER (WHERE interaction_type = 'view')         AS view_count,
           count(*) FILTER (WHERE interaction_type = 'click')        AS click_count,
           count(*) FILTER (WHERE interaction_type = 'cart_add')     AS cart_add_count,
           count(*) FILTER (WHERE interaction_type = 'cart_remove')  AS cart_remove_count,
           count(*) FILTER (WHERE interaction_type = 'purchase')     AS purchase_count,
           sum(interaction_score::DECIMAL(38, 12))::DOUBLE           AS total_interaction_score,
           round(sum((interaction_score * recency_score)::DECIMAL(38, 12))::DOUBLE, 6) AS weighted_affinity_score,
           round((sum(recency_score::DECIMAL(38, 12)) FILTER (WHERE interaction_type = 'purchase'))::DOUBLE, 6)
                                                                     AS weighted_purchase_count,
           max(interaction_timestamp)                                AS last_interaction_at,
           CAST(date_diff('second', max(interaction_timestamp), getvariable('as_of')) // 86400 AS INTEGER)
                                                                     AS days_since_interaction
    FROM customer_behavior_comprehensive
    GROUP BY customer_id, product_id
)
SELECT *,
       CASE
           WHEN weighted_affinity_score > getvariable('high_affinity_above')   THEN 'high_affinity'
           WHEN weighted_affinity_score > getvariable('medium_affinity_above') THEN 'medium_affinity'
           WHEN weighted_affinity_score > getvariable('low_affinity_above')    THEN 'low_affinity'
           ELSE 'no_affinity'
       END AS affinity_category
FROM scored
