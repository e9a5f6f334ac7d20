-- merchandising_rule_edges: the product matches (merchandising_rule_products) of the home rules whose validity
-- window opened or closed in the hour before the as-of time: valid_from or valid_to in (as_of - 1 h, as_of]. (The
-- other placements' rules are applied when answering, each at its own time.)
SELECT *
FROM merchandising_rule_products
WHERE placement = 'home'
  AND ((valid_from > getvariable('as_of') - INTERVAL 1 HOUR AND valid_from <= getvariable('as_of'))
       OR (valid_to > getvariable('as_of') - INTERVAL 1 HOUR AND valid_to <= getvariable('as_of')))
