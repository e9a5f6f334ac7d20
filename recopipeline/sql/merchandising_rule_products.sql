-- merchandising_rule_products: every product each merchandising rule matches, with the rule's placement and
-- validity window (its users keep the rules of their placement in force at their time). A product matches when
-- it meets every condition the rule gives: one of its product ids, its category, its
-- brand, its price within [min_price, max_price] (an unknown price meets no price condition), listed within
-- new_within_days days before the as-of time. Pins match only available products (active, in stock or stock
-- unknown): an unavailable product is never shown.
WITH rules AS (
    SELECT rule_id, placement, action, customer_segment, value, coalesce(priority, 0) AS priority, valid_from, valid_to,
           list_transform(string_split(product_ids, '|'), lambda id: trim(id)) AS product_ids,
           category, brand, min_price, max_price, new_within_days
    FROM merchandising_rules
)
SELECT r.rule_id, r.placement, r.action, r.customer_segment, r.value, r.priority, r.valid_from, r.valid_to, p.product_key
FROM rules AS r
JOIN products AS p
  ON (r.product_ids IS NULL OR list_contains(r.product_ids, p.product_id))
 AND (r.category IS NULL OR p.category = r.category)
 AND (r.brand IS NULL OR p.brand = r.brand)
 AND (r.min_price IS NULL OR p.price >= r.min_price)
 AND (r.max_price IS NULL OR p.price <= r.max_price)
 AND (r.new_within_days IS NULL OR p.created_at > getvariable('as_of') - to_days(r.new_within_days))
WHERE r.action <> 'pin' OR (p.is_active AND (p.stock_quantity > 0 OR p.stock_quantity IS NULL))
