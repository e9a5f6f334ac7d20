-- product_popularity: ranked lists of popular, available products: one list for all customers
-- (segment = 'all') and one per customer segment. Popularity is the recency-weighted interaction score,
-- so recent activity counts most ("trending"); a segment's list falls back to overall popularity for
-- products its customers have not touched. Feeds the category-preference and cold-start strategies.
-- Sums run over DECIMAL, which is exact: a rerun gives the same bits however the threads split the rows.
WITH available AS (
    SELECT product_id, category
    FROM products
    WHERE is_active AND (stock_quantity > 0 OR stock_quantity IS NULL)  -- unknown stock counts as in stock
),
overall AS (
    SELECT product_id,
           sum((interaction_score * recency_score)::DECIMAL(38, 12))::DOUBLE AS popularity_score,
           count(DISTINCT customer_id) FILTER (
               WHERE interaction_type = 'purchase'
                 AND interaction_timestamp > getvariable('as_of') - to_days(getvariable('popular_window_days'))
           ) AS recent_buyers
    FROM customer_behavior_comprehensive
    GROUP BY product_id
),
by_segment AS (
    SELECT customer_segment AS segment, product_id,
           sum((interaction_score * recency_score)::DECIMAL(38, 12))::DOUBLE AS popularity_score
    FROM customer_behavior_comprehensive
    GROUP BY customer_segment, product_id
),
segments AS (
    SELECT segment FROM (VALUES ('all'), ('new'), ('returning'), ('vip'), ('at_risk')) AS t(segment)
),
scored AS (
    SELECT s.segment,
           a.product_id,
           a.category,
           round(coalesce(CASE WHEN s.segment = 'all' THEN o.popularity_score ELSE b.popularity_score END, 0), 6)
                                            AS popularity_score,
           round(coalesce(o.popularity_score, 0), 6) AS overall_score,
           coalesce(o.recent_buyers, 0)     AS recent_buyers
    FROM segments AS s
    CROSS JOIN available AS a              -- 5 segments x catalogue: linear in the catalogue size
    LEFT JOIN overall AS o ON o.product_id = a.product_id
    LEFT JOIN by_segment AS b ON b.segment = s.segment AND b.product_id = a.product_id
)
SELECT *,
       row_number() OVER (PARTITION BY segment ORDER BY popularity_score DESC, overall_score DESC, product_id)
           AS popularity_rank,
       row_number() OVER (PARTITION BY segment, category ORDER BY popularity_score DESC, overall_score DESC, product_id)
           AS category_rank
FROM scored
QUALIFY popularity_rank <= getvariable('popular_products')
     OR category_rank <= getvariable('category_products')
