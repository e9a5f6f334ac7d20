-- customer_placement_recommendations: each customer's lists of the recently_viewed and buy_it_again placements,
-- at most top_n products each, available products only (active, in stock or stock unknown), by the customer's and
-- the product's ids. A product without a name is shown by its id.
--   recently_viewed  the products the customer viewed (a view or a click), last viewed first; score: the view's
--                    recency, 0.5 per recency_half_life_days; evidence 'viewed:<time>'
--   buy_it_again     the products the customer ordered, by the repurchase strategy's score
--                    (customer_repurchase_scores) divided by the customer's best; evidence 'bought:<orders>'
-- Ties by product key. The placements' merchandising rules are applied when answering (serving/rules.py).
WITH available AS (
    SELECT product_key, product_id, coalesce(product_name, product_id) AS product_name
    FROM products
    WHERE is_active AND (stock_quantity > 0 OR stock_quantity IS NULL)
),
viewed AS (
    -- the evidence text is made for the rows kept only
    SELECT customer_key, 'recently_viewed' AS placement, product_key,
           pow(0.5, date_diff('second', last_viewed_at, getvariable('as_of')) / 86400.0
                    / getvariable('recency_half_life_days')) AS score,
           last_viewed_at AS viewed_at, NULL::BIGINT AS orders,
           row_number() OVER (PARTITION BY customer_key ORDER BY last_viewed_at DESC, product_key) AS recommendation_rank
    FROM customer_behavior_comprehensive
    WHERE last_viewed_at IS NOT NULL AND product_key IN (SELECT product_key FROM available)
),
bought AS (
    SELECT * EXCLUDE (raw_score),
           row_number() OVER (PARTITION BY customer_key ORDER BY raw_score DESC, product_key) AS recommendation_rank
    FROM (
        -- divided by the customer's best over every product ordered, available or not
        SELECT customer_key, 'buy_it_again' AS placement, product_key,
               raw_score / max(raw_score) OVER (PARTITION BY customer_key) AS score,
               NULL::TIMESTAMP AS viewed_at, orders, raw_score
        FROM customer_repurchase_scores
        WHERE raw_score > 0
    )
    WHERE product_key IN (SELECT product_key FROM available)
),
ranked AS (
    SELECT * FROM viewed WHERE recommendation_rank <= getvariable('top_n')
    UNION ALL
    SELECT * FROM bought WHERE recommendation_rank <= getvariable('top_n')
)
SELECT c.customer_id,
       r.placement,
       r.recommendation_rank,
       p.product_id,
       p.product_name,
       round(r.score, 9) AS recommendation_score,
       CASE r.placement
           WHEN 'recently_viewed' THEN 'viewed:' || strftime(r.viewed_at, '%Y-%m-%dT%H:%M:%S')
           ELSE 'bought:' || r.orders
       END AS evidence
FROM ranked AS r
JOIN customer_keys AS c USING (customer_key)
JOIN available AS p USING (product_key)
