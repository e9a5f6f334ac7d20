-- serving_placement_rules: the merchandising rules of every placement but home (whose rules shaped the top N
-- already), each with the products it matches (merchandising_rule_products, as of the as-of time), for the read
-- API to apply when it answers, within each rule's validity window. Rules that ended by the as-of time are left
-- out.
SELECT r.placement,
       r.rule_id,
       p.product_id,
       coalesce(p.product_name, p.product_id) AS product_name,
       r.action,
       r.value,
       r.priority,
       r.valid_from,
       r.valid_to
FROM merchandising_rule_products AS r
JOIN products AS p USING (product_key)
WHERE r.placement <> 'home'
  AND (r.valid_to IS NULL OR r.valid_to > getvariable('as_of'))
