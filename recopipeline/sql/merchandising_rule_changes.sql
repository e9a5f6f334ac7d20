-- merchandising_rule_changes: the customers whose list a merchandising rule can change because its validity
-- window opened or closed in the hour before the as-of time (merchandising_rule_edges): for an exclude, boost or
-- bury, the customers with a candidate it matches (product_recommendations); for a pin, every customer of its
-- segment.
SELECT DISTINCT s.customer_key
FROM merchandising_rule_edges AS m
JOIN customer_segments AS s ON m.customer_segment IS NULL OR m.customer_segment = s.customer_segment
WHERE m.action = 'pin'
   OR EXISTS (
       SELECT 1 FROM product_recommendations AS r
       WHERE r.customer_key = s.customer_key AND r.product_key = m.product_key
   )
