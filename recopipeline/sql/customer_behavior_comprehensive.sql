-- customer_behavior_comprehensive: one row per interaction up to the as-of time, enriched with the customer's
-- segment, the product's attributes, order and cart context, and the event's score and recency weight.
-- Order and cart context are aggregated to one row per (customer, product) before the join, so an event is
-- never repeated (the tutorial joins raw orders and carts and multiplies rows).
-- Sums run over DECIMAL, which is exact: a rerun gives the same bits however the threads split the rows.
WITH order_context AS (
    SELECT customer_id, product_id,
           count(*)                                 AS orders_with_product,
           sum(quantity)                            AS units_bought,
           sum(line_value::DECIMAL(38, 12))::DOUBLE AS value_bought,
           max(order_timestamp)                     AS last_ordered_at
    FROM orders
    WHERE order_timestamp <= getvariable('as_of')
    GROUP BY customer_id, product_id
),
cart_context AS (
    SELECT customer_id, product_id,
           count(*)                                             AS carts_with_product,
           count(*) FILTER (WHERE cart_status = 'abandoned')    AS carts_abandoned
    FROM cart_activity
    WHERE added_at <= getvariable('as_of')
    GROUP BY customer_id, product_id
),
events AS (
    SELECT *,
           date_diff('second', interaction_timestamp, getvariable('as_of')) / 86400.0 AS age_days
    FROM customer_interactions
    WHERE interaction_timestamp <= getvariable('as_of')
)
SELECT e.event_id,
       e.customer_id,
       s.customer_segment,
       e.product_id,
       p.category,
       p.brand,
       p.price,
       e.interaction_type,
       e.interaction_timestamp,
       e.session_id,
       hour(e.interaction_timestamp)           AS interaction_hour,
       dayofweek(e.interaction_timestamp)      AS day_of_week,
       coalesce(o.orders_with_product, 0)      AS orders_with_product,
       coalesce(o.value_bought, 0)             AS value_bought,
       coalesce(c.carts_abandoned, 0)          AS carts_abandoned,
       CASE e.interaction_type
           WHEN 'purchase'    THEN getvariable('weight_purchase')
           WHEN 'cart_add'    THEN getvariable('weight_cart_add')
           WHEN 'click'       THEN getvariable('weight_click')
           WHEN 'view'        THEN getvariable('weight_view')
           WHEN 'cart_remove' THEN getvariable('weight_cart_remove')
           ELSE 0
       END AS interaction_score,
       CASE
           WHEN getvariable('recency_mode') = 'exponential'
               THEN pow(0.5, e.age_days / getvariable('recency_half_life_days'))
           WHEN e.age_days < 1  THEN 1.0
           WHEN e.age_days < 7  THEN 0.8
           WHEN e.age_days < 30 THEN 0.5
           ELSE 0.2
       END AS recency_score
FROM events AS e
JOIN products AS p USING (product_id)
JOIN customer_segments AS s USING (customer_id)
LEFT JOIN order_context AS o USING (customer_id, product_id)
LEFT JOIN cart_context AS c USING (customer_id, product_id)
