-- product_similarity: the tutorial's attribute score, in both directions, top-K neighbours per product.
--   score = 0.4 x same category + 0.3 x (0.8 if same brand) + 0.3 x (0.6 if prices within the band)
-- Without a category match the score is at most 0.42, below any allowed threshold (> 0.42), so only
-- same-category pairs that also share a brand or a price band can qualify. Prices a, b are within the band when
-- |a - b| / max(a, b) < band, i.e. a(1 - band) < b < a / (1 - band). An unknown (NULL) brand or price
-- matches nothing: such a product is similar only through what is known.
--
-- The score takes three values: 0.82 (same brand, in band), 0.64 (same brand only), 0.58 (in band only), and
-- within one value the nearer price wins, then the smaller id. So a product's top K come from a few short lists,
-- never from all pairs of its category:
--   * its brand's products at the K + 1 nearest places at or below its price and the K above: along
--     either side the band is a run of the nearest prices, so 0.82 comes first and 0.64 after;
--   * its brand's products of unknown price, by id (and, for a product of unknown or infinite price, its
--     brand's products by id: every gap is unknown or the same);
--   * its category's products at the same places, for 0.58 with another brand.
-- A product outside these lists is behind at least K of the listed ones. Equal prices are equal gaps, decided by
-- the id, so at each price only the K + 1 smallest ids are listed (K + 1: the product itself may be one).
-- The candidates are then scored and ranked as the full pair join would: the same rows, scores and ranks,
-- at a cost of products x K instead of the square of a category's size.
WITH catalogue AS (  -- each product also as a neighbour: the lists carry what scoring reads, nothing is joined back
    SELECT product_key, category, brand, price,
           {'product_key': product_key, 'brand': brand, 'price': price} AS neighbour
    FROM products
),
brand_prices AS (  -- a brand's products at each known price, the K + 1 smallest ids
    SELECT category, brand, price, product_key, neighbour,
           row_number() OVER (PARTITION BY category, brand, price ORDER BY product_key) AS place
    FROM catalogue
    WHERE brand IS NOT NULL AND price IS NOT NULL
    QUALIFY place <= greatest(getvariable('similarity_top_k'), 0) + 1
),
brand_windows AS (  -- per brand and price: K + 1 products from that price down, K from the next price up
    SELECT category, brand, price,
           list(neighbour) OVER (
               PARTITION BY category, brand ORDER BY price DESC, product_key
               ROWS BETWEEN CURRENT ROW AND greatest(getvariable('similarity_top_k'), 0) FOLLOWING
           ) AS down,
           list(neighbour) OVER (
               PARTITION BY category, brand ORDER BY price, product_key
               ROWS BETWEEN at_price FOLLOWING AND at_price + getvariable('similarity_top_k') - 1 FOLLOWING
           ) AS up
    FROM (SELECT *, count(*) OVER (PARTITION BY category, brand, price) AS at_price FROM brand_prices)
    QUALIFY place = 1  -- the first product of its price in both orders
),
brand_firsts AS (  -- per brand: the K + 1 smallest ids with a finite price, another price (inf, NaN), none
    SELECT category, brand,
           arg_min(neighbour, product_key, greatest(getvariable('similarity_top_k'), 0) + 1)
               FILTER (WHERE isfinite(price)) AS finite,
           arg_min(neighbour, product_key, greatest(getvariable('similarity_top_k'), 0) + 1)
               FILTER (WHERE NOT isfinite(price)) AS other,
           arg_min(neighbour, product_key, greatest(getvariable('similarity_top_k'), 0) + 1)
               FILTER (WHERE price IS NULL) AS unpriced
    FROM catalogue
    WHERE brand IS NOT NULL
    GROUP BY category, brand
),
category_prices AS (  -- a category's products at each known price, the K + 1 smallest ids
    SELECT category, brand, price, product_key, neighbour,
           row_number() OVER (PARTITION BY category, price ORDER BY product_key) AS place
    FROM catalogue
    WHERE price IS NOT NULL
    QUALIFY place <= greatest(getvariable('similarity_top_k'), 0) + 1
),
category_windows AS (  -- per category and price: K + 1 products from that price down, K from the next up
    SELECT category, price,
           list(neighbour) OVER (
               PARTITION BY category ORDER BY price DESC, product_key
               ROWS BETWEEN CURRENT ROW AND greatest(getvariable('similarity_top_k'), 0) FOLLOWING
           ) AS down,
           list(neighbour) OVER (
               PARTITION BY category ORDER BY price, product_key
               ROWS BETWEEN at_price FOLLOWING AND at_price + getvariable('similarity_top_k') - 1 FOLLOWING
           ) AS up
    FROM (SELECT *, count(*) OVER (PARTITION BY category, price) AS at_price FROM category_prices)
    QUALIFY place = 1
),
candidates AS (
    SELECT a.product_key, a.brand, a.price, unnest(list_concat(w.down, w.up)) AS b, TRUE AS same_brand  -- b: neighbour
    FROM catalogue AS a
    JOIN brand_windows AS w USING (category, brand, price)
    WHERE isfinite(a.price)
    UNION ALL
    SELECT a.product_key, a.brand, a.price,
           unnest(CASE WHEN isfinite(a.price) THEN f.unpriced ELSE list_concat(f.finite, f.other, f.unpriced) END),
           TRUE
    FROM catalogue AS a
    JOIN brand_firsts AS f USING (category, brand)
    UNION ALL
    SELECT a.product_key, a.brand, a.price, unnest(list_concat(w.down, w.up)), FALSE
    FROM catalogue AS a
    JOIN category_windows AS w USING (category, price)
    WHERE isfinite(a.price)
),
scored AS (
    SELECT product_key                                                        AS product_key_1,
           b.product_key                                                      AS product_key_2,
           1.0                                                               AS category_match,
           CASE WHEN brand = b.brand THEN 0.8 ELSE 0.0 END                   AS brand_match,
           CASE WHEN abs(price - b.price) / nullif(greatest(price, b.price), 0) < getvariable('price_band')
                THEN 0.6 ELSE 0.0 END                                        AS price_similarity,
           abs(price - b.price)                                              AS price_gap
    FROM candidates
    WHERE product_key <> b.product_key
      -- from the category's lists only other brands (the brand's own come from its lists), within the band as the
      -- pair join writes it
      AND (same_brand
           OR (NOT coalesce(brand = b.brand, FALSE)
               AND b.price > price * (1 - getvariable('price_band'))
               AND b.price < price / (1 - getvariable('price_band'))))
)
SELECT product_key_1,
       product_key_2,
       category_match,
       brand_match,
       price_similarity,
       round(category_match * 0.4 + brand_match * 0.3 + price_similarity * 0.3, 6) AS attribute_similarity_score,
       row_number() OVER (
           PARTITION BY product_key_1
           ORDER BY attribute_similarity_score DESC, price_gap, product_key_2
       ) AS similarity_rank
FROM scored
WHERE round(category_match * 0.4 + brand_match * 0.3 + price_similarity * 0.3, 6) >= getvariable('similarity_threshold')
QUALIFY similarity_rank <= getvariable('similarity_top_k')
