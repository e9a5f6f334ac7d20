-- product_similarity: the tutorial's attribute score, in both directions, top-K neighbours per product.
--   score = 0.4 x same category + 0.3 x (0.8 if same brand) + 0.3 x (0.6 if prices within the band)
-- Without a category match the score is at most 0.42, below any allowed threshold (> 0.42), so only
-- same-category pairs that also share a brand or a price band can qualify. We join exactly those
-- candidates instead of the tutorial's N^2 cross join. Prices a, b are within the band when
-- |a - b| / max(a, b) < band, i.e. a(1 - band) < b < a / (1 - band). An unknown (NULL) brand or price
-- matches nothing: such a product is similar only through what is known.
WITH catalogue AS (
    SELECT product_id, category, brand, price FROM products
),
candidates AS (
    SELECT a.product_id AS product_id_1, b.product_id AS product_id_2
    FROM catalogue AS a
    JOIN catalogue AS b
      ON a.category = b.category AND a.brand = b.brand AND a.product_id <> b.product_id
    UNION
    SELECT a.product_id, b.product_id
    FROM catalogue AS a
    JOIN catalogue AS b
      ON a.category = b.category
     AND b.price > a.price * (1 - getvariable('price_band'))
     AND b.price < a.price / (1 - getvariable('price_band'))
     AND a.product_id <> b.product_id
),
scored AS (
    SELECT c.product_id_1,
           c.product_id_2,
           1.0                                                               AS category_match,
           CASE WHEN a.brand = b.brand THEN 0.8 ELSE 0.0 END                 AS brand_match,
           CASE WHEN abs(a.price - b.price) / nullif(greatest(a.price, b.price), 0) < getvariable('price_band')
                THEN 0.6 ELSE 0.0 END                                        AS price_similarity,
           abs(a.price - b.price)                                            AS price_gap
    FROM candidates AS c
    JOIN catalogue AS a ON a.product_id = c.product_id_1
    JOIN catalogue AS b ON b.product_id = c.product_id_2
)
SELECT product_id_1,
       product_id_2,
       category_match,
       brand_match,
       price_similarity,
       round(category_match * 0.4 + brand_match * 0.3 + price_similarity * 0.3, 6) AS attribute_similarity_score,
       row_number() OVER (
           PARTITION BY product_id_1
           ORDER BY attribute_similarity_score DESC, price_gap, product_id_2
       ) AS similarity_rank
FROM scored
WHERE round(category_match * 0.4 + brand_match * 0.3 + price_similarity * 0.3, 6) >= getvariable('similarity_threshold')
QUALIFY similarity_rank <= getvariable('similarity_top_k')
