-- serving_product_relations: product-page lists for the read API. For each product its similar (attribute
-- similarity), complementary (bought after or with it) and bought-together (co-purchase Jaccard) products,
-- available ones only, re-ranked 1..k per list after unavailable products are dropped. The lists are computed
-- on product keys; the ids and names are joined back for the readers.
WITH available AS (
    -- unknown stock (NULL) counts as in stock; a product without a name is shown by its id
    SELECT product_key, product_id, coalesce(product_name, product_id) AS product_name
    FROM products
    WHERE is_active AND (stock_quantity > 0 OR stock_quantity IS NULL)
),
relations AS (
    -- each source keeps its own order: similarity_rank and complementary_rank already break ties
    SELECT product_key_1 AS product_key, 'similar' AS relation, product_key_2 AS related_product_key,
           attribute_similarity_score AS score, similarity_rank AS source_rank
    FROM product_similarity
    UNION ALL
    SELECT product_key_1, 'complementary', product_key_2, complementary_score, complementary_rank
    FROM complementary_products
    UNION ALL
    SELECT product_key_1, 'bought_together', product_key_2, co_purchase_similarity,
           row_number() OVER (
               PARTITION BY product_key_1 ORDER BY co_purchase_similarity DESC, co_purchase_count DESC, product_key_2
           )
    FROM products_bought_together
)
SELECT p.product_id,
       r.relation,
       row_number() OVER (PARTITION BY r.product_key, r.relation ORDER BY r.source_rank, r.related_product_key) AS rank,
       a.product_id AS related_product_id,
       a.product_name AS related_product_name,
       r.score
FROM relations AS r
JOIN available AS a ON a.product_key = r.related_product_key
JOIN product_keys AS p ON p.product_key = r.product_key  -- the page's product may have left the catalogue
QUALIFY rank <= getvariable('relations_per_product')
