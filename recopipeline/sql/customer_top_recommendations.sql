-- customer_top_recommendations: each customer's top N recommendations with the product's display fields, by
-- the customer's and the product's ids (joined back from their keys). A product without a name is shown by its
-- id; an unknown price stays NULL.
SELECT c.customer_id,
       r.recommendation_rank,
       p.product_id,
       coalesce(p.product_name, p.product_id) AS product_name,
       p.category,
       p.price,
       r.recommendation_type,
       r.recommendation_score,
       r.evidence,
       r.variant
FROM product_recommendations AS r
JOIN customer_keys AS c USING (customer_key)
JOIN products AS p USING (product_key)
WHERE r.recommendation_rank <= getvariable('top_n')
