-- serving_placement_rules: the merchandising rules the read API applies when it answers, each with the products
-- it matches (merchandising_rule_products, as of the as-of time), within each rule's validity window: the rules of
-- every placement but home (whose rules shaped the customers' top N already), and the home rules without a
-- segment, for the cold-start list. A rule with a segment applies to the customers of that segment (the read API
-- looks it up in the version's customer_segments). Rules that ended by the as-of time are left out.
SELECT r.placement,
       r.rule_id,
       p.product_id,
       coalesce(p.product_name, p.product_id) AS product_name,
       r.action,
       r.value,
       r.priority,
       r.valid_from,
       r.valid_to,
       r.customer_segment
FROM merchandising_rule_products AS r
JOIN products AS p USING (product_key)
WHERE (r.placement <> 'home' OR r.customer_segment IS NULL)
  AND (r.valid_to IS NULL OR r.valid_to > getvariable('as_of'))
