-- customer_top_recommendations: each customer's top N recommendations for the home placement, the shop's
-- merchandising rules in force applied (merchandising_rule_products: the products each rule matches), with the
-- product's display fields, by the customer's and the product's ids (joined back from their keys). A product
-- without a name is shown by its id; an unknown price stays NULL.
--
-- Of a customer's candidates (product_recommendations, ranked by the learned model where
-- learned_recommendations ranks them; best first), for the rules of the customer's segment:
--   exclude      a matched candidate is dropped (and a matched product is never pinned);
--   boost, bury  a matched candidate's score is multiplied by the rule's value (by every matching rule's), capped
--                at 1; the candidates are ranked again by that score, ties by the blend's rank;
--   pin          the product takes the pinned position: pins are placed by position, then higher priority, then
--                smaller rule id, a taken position passing to the next free one; of two pins of one product the
--                stronger counts. A pinned product the customer bought (with exclude_purchased) is not shown; one
--                that is not a candidate comes with type 'pinned' and score 0, one that is keeps its blended
--                score and type; a pin placed beyond top_n is not applied, and a list with fewer candidates
--                than the position shows the pin after them;
-- the other candidates fill the free positions in their order, and the first top_n positions are kept. The
-- rules that moved a row are listed after its evidence ('rule:<id>').
--
-- Diversity (diversity_max_per_category, diversity_max_per_brand; 0 is no cap): a candidate comes after the rest
-- of the list when the cap or more of the customer's better candidates (after the rules) share its category,
-- or its brand; among themselves such candidates keep their order. With one cap this is the greedy re-rank that
-- keeps every category to the cap while candidates of other categories last. Pins are placed as they are.
--
-- Customers whom no rule touches, without a diversity cap, keep the blend's ranks as they are.
WITH candidates AS NOT MATERIALIZED (
    -- the blend's candidates, with the learned model's rank and score where it ranked them (a promoted model);
    -- not materialized: each use reads only the columns and rows it needs (a copy of every candidate would
    -- hold all 19 million rows of scale l in memory, and spill at xl)
    SELECT r.* REPLACE (coalesce(l.recommendation_score, r.recommendation_score) AS recommendation_score,
                        coalesce(l.recommendation_rank, r.recommendation_rank) AS recommendation_rank)
    FROM product_recommendations AS r
    LEFT JOIN learned_recommendations AS l USING (customer_key, product_key)
),
rules AS (
    -- the home rules in force at the as-of time: from valid_from (or always) until just before valid_to (or for
    -- good); the other placements' rules are applied when answering (serving/rules.py)
    SELECT * FROM merchandising_rule_products
    WHERE placement = 'home'
      AND (valid_from IS NULL OR valid_from <= getvariable('as_of'))
      AND (valid_to IS NULL OR valid_to > getvariable('as_of'))
),
touched AS (
    -- the exclude, boost and bury rules of each candidate they match
    SELECT r.customer_key, r.product_key,
           bool_or(m.action = 'exclude')                                         AS excluded,
           product(m.value) FILTER (WHERE m.action IN ('boost', 'bury'))         AS factor,
           string_agg('rule:' || m.rule_id, '|' ORDER BY m.rule_id)
               FILTER (WHERE m.action IN ('boost', 'bury'))                      AS rules
    FROM candidates AS r
    JOIN rules AS m USING (product_key)
    JOIN customer_segments AS s USING (customer_key)
    WHERE m.action <> 'pin' AND (m.customer_segment IS NULL OR m.customer_segment = s.customer_segment)
    GROUP BY r.customer_key, r.product_key
),
pins AS (
    -- each customer's pins in force: the stronger of two pins of one product
    SELECT s.customer_key, m.product_key, m.rule_id, m.value::INTEGER AS position, m.priority
    FROM rules AS m
    JOIN customer_segments AS s ON m.customer_segment IS NULL OR m.customer_segment = s.customer_segment
    WHERE m.action = 'pin'
      AND NOT EXISTS (
          SELECT 1 FROM rules AS x
          WHERE x.action = 'exclude' AND x.product_key = m.product_key
            AND (x.customer_segment IS NULL OR x.customer_segment = s.customer_segment)
      )
      AND NOT (
          getvariable('exclude_purchased')
          AND (EXISTS (SELECT 1 FROM orders AS o
                       WHERE o.customer_key = s.customer_key AND o.product_key = m.product_key
                         AND o.order_timestamp <= getvariable('as_of'))
               OR EXISTS (SELECT 1 FROM customer_product_affinity AS a
                          WHERE a.customer_key = s.customer_key AND a.product_key = m.product_key
                            AND a.purchase_count > 0))
      )
    QUALIFY row_number() OVER (PARTITION BY s.customer_key, m.product_key ORDER BY m.priority DESC, m.rule_id) = 1
),
pin_slots AS (
    -- the j-th pin (by position, priority, rule id) takes max(position, the previous pin's slot + 1); a pin placed
    -- beyond top_n is dropped (its product, if a candidate, keeps its own place)
    SELECT * FROM (
        SELECT customer_key, product_key, rule_id, j,
               j + max(position - j) OVER (PARTITION BY customer_key ORDER BY j ROWS UNBOUNDED PRECEDING) AS slot
        FROM (
            SELECT *, row_number() OVER (PARTITION BY customer_key ORDER BY position, priority DESC, rule_id) AS j
            FROM pins
        )
    )
    WHERE slot <= getvariable('top_n')
),
affected AS (
    SELECT customer_key FROM touched
    UNION SELECT customer_key FROM pin_slots
    UNION SELECT customer_key FROM customer_segments
    WHERE getvariable('diversity_max_per_category') > 0 OR getvariable('diversity_max_per_brand') > 0
),
rescored AS (
    -- the affected customers' candidates that no pin places, in their order after the rules
    SELECT r.customer_key, r.product_key, r.recommendation_type,
           least(r.recommendation_score * coalesce(t.factor, 1), 1.0) AS recommendation_score,
           concat_ws('|', r.evidence, t.rules) AS evidence, r.variant, p.category, p.brand,
           row_number() OVER (
               PARTITION BY r.customer_key
               ORDER BY least(r.recommendation_score * coalesce(t.factor, 1), 1.0) DESC, r.recommendation_rank
           ) AS rule_rank
    FROM candidates AS r
    JOIN products AS p USING (product_key)
    LEFT JOIN touched AS t USING (customer_key, product_key)
    WHERE r.customer_key IN (SELECT customer_key FROM affected)
      AND NOT coalesce(t.excluded, false)
      AND NOT EXISTS (SELECT 1 FROM pin_slots AS p WHERE p.customer_key = r.customer_key AND p.product_key = r.product_key)
      -- candidates are unbought when they are made; a list ranked again later (the hourly refresh) checks again
      AND NOT (getvariable('exclude_purchased') AND EXISTS (
          SELECT 1 FROM orders AS o
          WHERE o.customer_key = r.customer_key AND o.product_key = r.product_key
            AND o.order_timestamp <= getvariable('as_of')
      ))
),
free AS (
    -- the diversity caps: a candidate beyond its category's or brand's cap goes after the others
    SELECT *,
           row_number() OVER (PARTITION BY customer_key ORDER BY beyond_cap, rule_rank) AS free_rank
    FROM (
        SELECT *,
               (getvariable('diversity_max_per_category') > 0
                AND row_number() OVER (PARTITION BY customer_key, category ORDER BY rule_rank)
                    > getvariable('diversity_max_per_category'))
               OR (getvariable('diversity_max_per_brand') > 0 AND brand IS NOT NULL
                   AND row_number() OVER (PARTITION BY customer_key, brand ORDER BY rule_rank)
                       > getvariable('diversity_max_per_brand')) AS beyond_cap
        FROM rescored
    )
),
placed AS (
    -- a free candidate of free rank k goes after the pins with fewer than k free positions before them
    SELECT f.customer_key, f.product_key, f.recommendation_type, f.recommendation_score, f.evidence, f.variant,
           f.free_rank + (SELECT count(*) FROM pin_slots AS p
                          WHERE p.customer_key = f.customer_key AND p.slot - p.j < f.free_rank) AS position
    FROM free AS f
    WHERE f.free_rank <= getvariable('top_n')
    UNION ALL
    SELECT p.customer_key, p.product_key,
           coalesce(r.recommendation_type, 'pinned'),  -- contract.PINNED
           coalesce(r.recommendation_score, 0.0),
           concat_ws('|', r.evidence, 'rule:' || p.rule_id),
           coalesce(r.variant, (SELECT any_value(v.variant) FROM candidates AS v
                                WHERE v.customer_key = p.customer_key)),
           p.slot
    FROM pin_slots AS p
    LEFT JOIN candidates AS r USING (customer_key, product_key)
),
ranked AS (
    -- the blend's ranks where no rule applies; positions numbered without gaps where rules did
    SELECT customer_key, product_key, recommendation_rank, recommendation_type, recommendation_score, evidence,
           variant
    FROM candidates
    WHERE recommendation_rank <= getvariable('top_n')
      AND customer_key NOT IN (SELECT customer_key FROM affected)
    UNION ALL
    SELECT customer_key, product_key,
           row_number() OVER (PARTITION BY customer_key ORDER BY position, product_key) AS recommendation_rank,
           recommendation_type, recommendation_score, evidence, variant
    FROM placed
)
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
FROM ranked AS r
JOIN customer_keys AS c USING (customer_key)
JOIN products AS p USING (product_key)
WHERE r.recommendation_rank <= getvariable('top_n')
