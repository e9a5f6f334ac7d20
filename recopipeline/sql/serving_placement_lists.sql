-- serving_placement_lists: the rows of the recently_viewed and buy_it_again placements the read API serves, one
-- list per customer and placement (customer_placement_recommendations).
SELECT customer_id,
       placement,
       recommendation_rank AS rank,
       product_id,
       product_name,
       recommendation_score AS score,
       evidence
FROM customer_placement_recommendations
