-- candidate_features: what the learned ranking (lib/ranking.py) knows of each candidate (customer, product) of
-- product_recommendations, as of the as-of time and only from data up to it. Product-side values come from the
-- product tables (computed over every customer), customer-side values from the customer's own rows, so a
-- customer's features are the same whether they are computed with everyone's or alone (the hourly refresh).
--   the blend        its score and rank, each strategy's normalised score (0: the strategy did not propose it),
--                    how many strategies proposed it
--   the customer     events, orders (all and recent), order value, days since first seen and last active
--   customer x item  affinity to the product, to its category (score and rank) and to its brand; views, cart
--                    adds and orders of the product, days since last bought (-1: never)
--   the product      buyers, repeat-buyer rate, recent orders and trend (product_repurchase_rates), popularity
--                    score and rank (product_popularity, all customers; 0 and 0 when outside its list), trend
--                    score (product_trending; 1 when not trending), price (-1: unknown), age in days (-1: unknown)
WITH own_orders AS (
    SELECT customer_key, product_key,
           count(DISTINCT order_id)                                                   AS product_orders,
           date_diff('second', max(order_timestamp), getvariable('as_of')) / 86400.0 AS days_since_bought
    FROM orders
    WHERE order_timestamp <= getvariable('as_of')
    GROUP BY customer_key, product_key
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
