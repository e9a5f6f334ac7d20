-- candidate_features: what the learned ranking (lib/ranking.py) knows of each candidate (customer, product) of
-- product_recommendations, as of the as-of time and only from data up to it. Product-side values come from the
-- product tables (computed over every customer), customer-side values from the customer's own rows, so a
-- customer's features are the same whether they are computed with everyone's or alone (the hourly refresh).
--   the blend        its score and rank, each strategy's normalised score (0: the strategy did not propose it),
--                    how many strategies proposed it
--   the customer     events, orders (all and recent), order value, days since first seen and last active;
--                    from their orders: products bought, re-order share (the share of their order lines of a
--                    product they had ordered before), days since their last order (-1: none), mean days
--                    between their orders (-1: fewer than two)
--   customer x item  affinity to the product, to its category (score and rank) and to its brand; views, cart
--                    adds and orders of the product, days since last bought (-1: never); the re-order signals:
--                    order rate (orders of the product over the customer's orders), days since first bought
--                    (-1: never), mean days between orders of it (-1: fewer than two), the due ratio (days since
--                    last bought over that mean interval; -1 without one), orders since last bought (-1: never),
--                    units bought in all and per order
--   the product      buyers, repeat-buyer rate, recent orders and trend (product_repurchase_rates), popularity
--                    score and rank (product_popularity, all customers; 0 and 0 when outside its list), trend
--                    score (product_trending; 1 when not trending), price (-1: unknown), age in days (-1: unknown)
WITH product_lines AS (
    -- one row per (customer, product, order)
    SELECT customer_key, product_key, order_id, max(order_timestamp) AS ordered_at, sum(quantity) AS quantity
    FROM orders
    WHERE order_timestamp <= getvariable('as_of')
    GROUP BY customer_key, product_key, order_id
),
numbered_orders AS (
    -- each order of a customer numbered in time (1: the first), with the customer's number of orders
    SELECT customer_key, order_id,
           row_number() OVER (PARTITION BY customer_key ORDER BY max(ordered_at), order_id) AS order_number,
           count(*) OVER (PARTITION BY customer_key)                                         AS customer_orders
    FROM product_lines
    GROUP BY customer_key, order_id
),
own_orders AS (
    SELECT l.customer_key, l.product_key,
           count(*)                                                                      AS product_orders,
           date_diff('second', max(l.ordered_at), getvariable('as_of')) / 86400.0       AS days_since_bought,
           date_diff('second', min(l.ordered_at), getvariable('as_of')) / 86400.0       AS days_since_first_bought,
           date_diff('second', min(l.ordered_at), max(l.ordered_at)) / 86400.0          AS bought_span_days,
           sum(l.quantity)                                                               AS quantity,
           any_value(n.customer_orders)                                                  AS customer_orders,
           any_value(n.customer_orders) - max(n.order_number)                            AS orders_since_bought
    FROM product_lines AS l
    JOIN numbered_orders AS n USING (customer_key, order_id)
    GROUP BY l.customer_key, l.product_key
),
customer_history AS (
    -- the customer's orders summed over their products
    SELECT customer_key,
           count(*)                                                                      AS products_bought,
           sum(product_orders - 1) / sum(product_orders)                                 AS reorder_share,
           min(days_since_bought)                                                        AS days_since_order,
           max(days_since_first_bought)                                                  AS days_since_first_order,
           any_value(customer_orders)                                                    AS customer_orders
    FROM own_orders
    GROUP BY customer_key
),
brand_affinity AS (
    SELECT a.customer_key, p.brand, sum(a.weighted_affinity_score) AS brand_affinity
    FROM customer_product_affinity AS a
    JOIN products AS p USING (product_key)
    WHERE p.brand IS NOT NULL
    GROUP BY a.customer_key, p.brand
)
SELECT r.customer_key,
       r.product_key,
       r.recommendation_rank                                                        AS blend_rank,
       r.recommendation_score                                                       AS blend_score,
       r.affinity_similar_score, r.collaborative_score, r.ease_score, r.complementary_score,
       r.category_preference_score, r.repurchase_score, r.popular_score, r.trending_score,
       (r.affinity_similar_score > 0)::INTEGER + (r.collaborative_score > 0)::INTEGER + (r.ease_score > 0)::INTEGER
           + (r.complementary_score > 0)::INTEGER + (r.category_preference_score > 0)::INTEGER
           + (r.repurchase_score > 0)::INTEGER + (r.popular_score > 0)::INTEGER
           + (r.trending_score > 0)::INTEGER                                        AS proposing_strategies,
       s.event_count::DOUBLE                                                        AS customer_events,
       s.order_count::DOUBLE                                                        AS customer_orders,
       s.recent_order_count::DOUBLE                                                 AS customer_recent_orders,
       s.order_value::DOUBLE                                                        AS customer_order_value,
       coalesce(date_diff('second', s.first_seen_at, getvariable('as_of')) / 86400.0, -1) AS customer_age_days,
       coalesce(date_diff('second', s.last_active_at, getvariable('as_of')) / 86400.0, -1) AS customer_idle_days,
       coalesce(a.weighted_affinity_score, 0)                                       AS product_affinity,
       coalesce(a.view_count + a.click_count, 0)::DOUBLE                            AS product_views,
       coalesce(a.cart_add_count, 0)::DOUBLE                                        AS product_cart_adds,
       coalesce(o.product_orders, 0)::DOUBLE                                        AS product_orders,
       coalesce(o.days_since_bought, -1)                                            AS days_since_bought,
       coalesce(o.product_orders / o.customer_orders, 0)                            AS order_rate,
       coalesce(o.days_since_first_bought, -1)                                      AS days_since_first_bought,
       CASE WHEN o.product_orders >= 2 THEN o.bought_span_days / (o.product_orders - 1) ELSE -1 END
                                                                                    AS reorder_interval_days,
       CASE WHEN o.product_orders >= 2 AND o.bought_span_days > 0
            THEN o.days_since_bought / (o.bought_span_days / (o.product_orders - 1)) ELSE -1 END
                                                                                    AS due_ratio,
       coalesce(o.orders_since_bought, -1)::DOUBLE                                  AS orders_since_bought,
       coalesce(o.quantity, 0)::DOUBLE                                              AS quantity_bought,
       coalesce(o.quantity / o.product_orders, 0)::DOUBLE                           AS quantity_per_order,
       coalesce(h.products_bought, 0)::DOUBLE                                       AS customer_products,
       coalesce(h.reorder_share, 0)                                                 AS customer_reorder_share,
       coalesce(h.days_since_order, -1)                                             AS customer_days_since_order,
       CASE WHEN h.customer_orders >= 2
            THEN (h.days_since_first_order - h.days_since_order) / (h.customer_orders - 1) ELSE -1 END
                                                                                    AS customer_order_interval,
       coalesce(c.weighted_category_score, 0)                                       AS category_affinity,
       coalesce(c.category_rank, 0)::DOUBLE                                         AS category_rank,
       coalesce(b.brand_affinity, 0)                                                AS brand_affinity,
       coalesce(q.buyers, 0)::DOUBLE                                                AS product_buyers,
       coalesce(q.repeat_rate, 0)                                                   AS product_repeat_rate,
       coalesce(q.recent_orders, 0)::DOUBLE                                         AS product_recent_orders,
       coalesce(q.recent_trend, 0)                                                  AS product_recent_trend,
       coalesce(g.popularity_score, 0)                                              AS popularity_score,
       coalesce(g.popularity_rank, 0)::DOUBLE                                       AS popularity_rank,
       coalesce(t.trending_score, 1)                                                AS product_trend,
       coalesce(p.price, -1)                                                        AS price,
       coalesce(date_diff('second', p.created_at, getvariable('as_of')) / 86400.0, -1) AS product_age_days
FROM product_recommendations AS r
JOIN products AS p USING (product_key)
JOIN customer_segments AS s USING (customer_key)
LEFT JOIN customer_product_affinity AS a USING (customer_key, product_key)
LEFT JOIN own_orders AS o USING (customer_key, product_key)
LEFT JOIN customer_history AS h ON h.customer_key = r.customer_key
LEFT JOIN customer_category_preferences AS c ON c.customer_key = r.customer_key AND c.category = p.category
LEFT JOIN brand_affinity AS b ON b.customer_key = r.customer_key AND b.brand = p.brand
LEFT JOIN product_repurchase_rates AS q USING (product_key)
LEFT JOIN product_popularity AS g ON g.segment = 'all' AND g.product_key = r.product_key
LEFT JOIN product_trending AS t USING (product_key)
-- only what existed at the as-of time: a model trained on an earlier as-of time must not learn from products
-- listed or customers signed up after it (learned_recommendations leaves such candidates in the blend's order)
WHERE getvariable('learned_ranking')  -- nothing to rank with the learned ranking off
  AND (p.created_at IS NULL OR p.created_at <= getvariable('as_of'))
  AND (s.signup_date IS NULL OR s.signup_date <= getvariable('as_of'))
