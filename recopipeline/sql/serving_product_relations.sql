-- serving_product_relations: product-page lists for the read API. For each product its similar (attribute
-- similarity), complementary (bought after or with it) and bought-together (co-purchase Jaccard) products,
-- available ones only, re-ranked 1..k per list after unavailable products are dropped.
WITH available AS (
    -- unknown stock (NULL) counts as in stock; a product without a name is shown by its id
    SELECT product_id, coalesce(product_name, product_id) AS product_name
    FROM products
    WHERE is_active AND (stock_quantity > 0 OR stock_quantity IS NULL)
),
relations AS (
    -- each source keeps its own order: similarity_rank and complementary_rank already break ties
    SELECT product_id_1 AS product_id, 'similar' AS relation, product_id_2 AS related_product_id,
           attribute_similarity_score AS score, similarity_rank AS source_rank
    FROM product_similarity
    UNION ALL
    SELECT product_id_1, 'complementary', product_id_2, complementary_score, complementary_rank
    FROM complementary_products
    UNION ALL
    SELECT product_id_1, 'bought_together', product_id_2, co_purchase_similarity,
           row_number() OVER (
               PARTITION BY product_id_1 ORDER BY co_purchase_similarity DESC, co_purchase_count DESC, product_id_2
           )
    FROM products_bought_together
)
SELECT r.product_id,
       r.relation,
       row_number() OVER (PARTITION BY r.product_id, r.relation ORDER BY r.source_rank, r.related_product_id) AS rank,
       r.related_product_id,
       a.product_name AS related_product_name,
       r.score
FROM relations AS r
JOIN available AS a ON a.product_id = r.related_product_id
QUALIFY rank <= getvariable('relations_per_product')
