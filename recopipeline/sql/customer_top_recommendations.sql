-- customer_top_recommendations: each customer's top N recommendations with the product's display fields.
-- A product without a name is shown by its id; an unknown price stays NULL.
SELECT r.customer_id,
       r.recommendation_rank,
       r.product_id,
       coalesce(p.product_name, p.product_id) AS product_name,
       p.category,
       p.price,
       r.recommendation_type,
       r.recommendation_score,
       r.evidence,
       r.variant
FROM product_recommendations AS r
JOIN products AS p USING (product_id)
WHERE r.recommendation_rank <= getvariable('top_n')
