-- customer_product_affinity: how much each customer likes each product they interacted with.
-- weighted_affinity_score = sum of event weight x recency weight; each interaction counts once.
-- The per-(customer, product) sums come from customer_behavior_comprehensive (exact DECIMAL sums of the events).
SELECT customer_key,
       product_key,
       category,
       view_count,
       click_count,
       cart_add_count,
       cart_remove_count,
       purchase_count,
       interaction_score::DOUBLE                  AS total_interaction_score,
       round(weighted_score::DOUBLE, 6)           AS weighted_affinity_score,
       round(purchase_recency::DOUBLE, 6)         AS weighted_purchase_count,
       last_interaction_at,
       CAST(date_diff('second', last_interaction_at, getvariable('as_of')) // 86400 AS INTEGER)
                                                  AS days_since_interaction,
       CASE
           WHEN round(weighted_score::DOUBLE, 6) > getvariable('high_affinity_above')   THEN 'high_affinity'
           WHEN round(weighted_score::DOUBLE, 6) > getvariable('medium_affinity_above') THEN 'medium_affinity'
           WHEN round(weighted_score::DOUBLE, 6) > getvariable('low_affinity_above')    THEN 'low_affinity'
           ELSE 'no_affinity'
       END AS affinity_category
FROM customer_behavior_comprehensive
