-- customer_segments: one row per known customer with an activity summary and a segment at the as-of time.
-- Segment rules, first match wins:
--   new        first seen (signup, first event or first order) within `new_customer_days` of the as-of time
--   at_risk    no event and no order within `at_risk_after_days` (includes customers who never acted)
--   vip        at least `vip_min_orders` orders within `vip_window_days`
--   returning  everyone else
-- Sums run over DECIMAL, which is exact: a rerun gives the same bits however the threads split the rows.
WITH activity AS (
    SELECT customer_key,
           min(interaction_timestamp) AS first_event_at,
           max(interaction_timestamp) AS last_event_at,
           count(*)                   AS event_count
    FROM customer_interactions
    WHERE interaction_timestamp <= getvariable('as_of')
    GROUP BY customer_key
),
-- one row per order first: the counts of distinct orders become plain counts
customer_orders AS (
    SELECT customer_key,
           order_id,
           sum(line_value::DECIMAL(38, 12)) AS order_value,
           min(order_timestamp)             AS first_line_at,
           max(order_timestamp)             AS last_line_at
    FROM orders
    WHERE order_timestamp <= getvariable('as_of')
    GROUP BY customer_key, order_id
),
purchases AS (
    SELECT customer_key,
           count(order_id)                 AS order_count,
           sum(order_value)::DOUBLE        AS order_value,
           count(order_id) FILTER (
               WHERE last_line_at > getvariable('as_of') - to_days(getvariable('vip_window_days'))
           )                               AS recent_order_count,
           min(first_line_at)              AS first_order_at,
           max(last_line_at)               AS last_order_at
    FROM customer_orders
    GROUP BY customer_key
),
profile AS (
    SELECT c.customer_key,
           c.signup_date,
           least(c.signup_date, a.first_event_at, p.first_order_at) AS first_seen_at,
           greatest(a.last_event_at, p.last_order_at)              AS last_active_at,
           coalesce(a.event_count, 0)                              AS event_count,
           coalesce(p.order_count, 0)                              AS order_count,
           coalesce(p.recent_order_count, 0)                       AS recent_order_count,
           coalesce(p.order_value, 0)                              AS order_value
    FROM customers AS c
    LEFT JOIN activity AS a USING (customer_key)
    LEFT JOIN purchases AS p USING (customer_key)
)
SELECT *,
       CASE
           WHEN first_seen_at IS NULL
             OR first_seen_at > getvariable('as_of') - to_days(getvariable('new_customer_days')) THEN 'new'
           WHEN last_active_at IS NULL
             OR last_active_at <= getvariable('as_of') - to_days(getvariable('at_risk_after_days')) THEN 'at_risk'
           WHEN recent_order_count >= getvariable('vip_min_orders') THEN 'vip'
           ELSE 'returning'
       END AS customer_segment
FROM profile
