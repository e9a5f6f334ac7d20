-- product_popularity: ranked lists of popular, available products: one list for all customers
-- (segment = 'all') and one per customer segment. Popularity is the recency-weighted interaction score,
-- so recent activity counts most ("trending"); a segment's list falls back to overall popularity for
-- products its customers have not touched. Feeds the category-preference and cold-start strategies.
-- The scores add up the exact DECIMAL per-(customer, product) sums of customer_behavior_comprehensive: the same
-- bits as summing the events, however the threads or the customer buckets split the rows.
WITH available AS (
    SELECT product_key, category
    FROM products
    WHERE is_active AND (stock_quantity > 0 OR stock_quantity IS NULL)  -- unknown stock counts as in stock
),
-- the totals (sql/popularity_totals.sql, made first): one row per (segment, product) over every customer, or one
-- per bucket of customers when the buckets' parts are read together (lib/shards.py); summed again either way
totals AS (
    SELECT segment,
           product_key,
           sum(weighted_score)::DOUBLE AS popularity_score,
           sum(recent_buyers)::BIGINT  AS recent_buyers
    FROM popularity_totals
    GROUP BY segment, product_key
),
overall AS (SELECT product_key, popularity_score, recent_buyers FROM totals WHERE segment = 'all'),
by_segment AS (SELECT segment, product_key, popularity_score FROM totals WHERE segment <> 'all'),
segments AS (
    SELECT segment FROM (VALUES ('all'), ('new'), ('returning'), ('vip'), ('at_risk')) AS t(segment)
),
scored AS (
    SELECT s.segment,
           a.product_key,
           a.category,
           round(coalesce(CASE WHEN s.segment = 'all' THEN o.popularity_score ELSE b.popularity_score END, 0), 6)
                                            AS popularity_score,
           round(coalesce(o.popularity_score, 0), 6) AS overall_score,
           coalesce(o.recent_buyers, 0)     AS recent_buyers
    FROM segments AS s
    CROSS JOIN available AS a              -- 5 segments x catalogue: linear in the catalogue size
    LEFT JOIN overall AS o ON o.product_key = a.product_key
    LEFT JOIN by_segment AS b ON b.segment = s.segment AND b.product_key = a.product_key
)
SELECT *,
       row_number() OVER (PARTITION BY segment ORDER BY popularity_score DESC, overall_score DESC, product_key)
           AS popularity_rank,
       row_number() OVER (PARTITION BY segment, category ORDER BY popularity_score DESC, overall_score DESC, product_key)
           AS category_rank
FROM scored
QUALIFY popularity_rank <= getvariable('popular_products')
     OR category_rank <= getvariable('category_products')
