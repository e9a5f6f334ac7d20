-- customer_behavior_comprehensive: every interaction up to the as-of time, scored once and summed per
-- (customer, product), with the customer's segment and the product's category.
-- Event score: the configured weight of the event's type. Recency weight: steps by age (< 1 day 1.0, < 7 days
-- 0.8, < 30 days 0.5, else 0.2) or, in exponential mode, 0.5 per half-life.
-- The sums are DECIMAL, which is exact: the consumers (affinity, category preferences, popularity) add the
-- per-pair sums up further and get the same bits as summing the events, however the threads split the rows.
-- Events are summed before the joins, so each interaction counts once (the tutorial joins raw orders and carts
-- here and multiplies rows); events of unknown customers or products are left out.
WITH events AS (
    SELECT customer_key,
           product_key,
           interaction_type,
           interaction_timestamp,
           date_diff('second', interaction_timestamp, getvariable('as_of')) / 86400.0 AS age_days,
           CASE interaction_type
               WHEN 'purchase'    THEN getvariable('weight_purchase')
               WHEN 'cart_add'    THEN getvariable('weight_cart_add')
               WHEN 'click'       THEN getvariable('weight_click')
               WHEN 'view'        THEN getvariable('weight_view')
               WHEN 'cart_remove' THEN getvariable('weight_cart_remove')
               ELSE 0
           END AS interaction_score
    FROM customer_interactions
    WHERE interaction_timestamp <= getvariable('as_of')
),
scored AS (
    SELECT *,
           CASE
               WHEN getvariable('recency_mode') = 'exponential'
                   THEN pow(0.5, age_days / getvariable('recency_half_life_days'))
               WHEN age_days < 1  THEN 1.0
               WHEN age_days < 7  THEN 0.8
               WHEN age_days < 30 THEN 0.5
               ELSE 0.2
           END AS recency_score
    FROM events
),
pairs AS (
    SELECT customer_key,
           product_key,
           count(*) FILTER (WHERE interaction_type = 'view')                        AS view_count,
           count(*) FILTER (WHERE interaction_type = 'click')                       AS click_count,
           count(*) FILTER (WHERE interaction_type = 'cart_add')                    AS cart_add_count,
           count(*) FILTER (WHERE interaction_type = 'cart_remove')                 AS cart_remove_count,
           count(*) FILTER (WHERE interaction_type = 'purchase')                    AS purchase_count,
           count(*)                                                                 AS event_count,
           -- the sum of the events' weights, from the counts above (exact, and no aggregate of its own)
           view_count * getvariable('weight_view')::DECIMAL(38, 12)
               + click_count * getvariable('weight_click')::DECIMAL(38, 12)
               + cart_add_count * getvariable('weight_cart_add')::DECIMAL(38, 12)
               + cart_remove_count * getvariable('weight_cart_remove')::DECIMAL(38, 12)
               + purchase_count * getvariable('weight_purchase')::DECIMAL(38, 12)  AS interaction_score,
           sum((interaction_score * recency_score)::DECIMAL(38, 12))                AS weighted_score,
           sum(recency_score::DECIMAL(38, 12))                                      AS recency_sum,
           sum(recency_score::DECIMAL(38, 12)) FILTER (WHERE interaction_type = 'purchase')
                                                                                    AS purchase_recency,
           max(interaction_timestamp)                                               AS last_interaction_at,
           max(interaction_timestamp) FILTER (WHERE interaction_type = 'purchase')  AS last_purchase_at,
           -- a click opens the product's page too: the recently_viewed placement lists both
           max(interaction_timestamp) FILTER (WHERE interaction_type IN ('view', 'click'))
                                                                                    AS last_viewed_at
    FROM scored
    GROUP BY customer_key, product_key
)
SELECT e.customer_key,
       s.customer_segment,
       e.product_key,
       p.category,
       e.* EXCLUDE (customer_key, product_key)
FROM pairs AS e
JOIN products AS p USING (product_key)
JOIN customer_segments AS s USING (customer_key)
