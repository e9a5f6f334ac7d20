-- The privileges of a reader of the serving database (the read API and the MCP server): read the live rows and
-- record impressions and clicks, nothing else. Run it as the owner of the serving tables once they exist (the
-- writer creates them on its first run), with the schema and the reader role as psql variables:
--   psql "$WRITER_URL" -v schema=recopipeline -v reader=reader -f recopipeline/deploy/postgres/serving_reader.sql
GRANT USAGE ON SCHEMA :"schema" TO :"reader";
GRANT SELECT ON :"schema".serving_state, :"schema".publications, :"schema".customer_recommendations,
    :"schema".product_relations, :"schema".customer_placement_lists, :"schema".placement_rules,
    :"schema".customer_segments TO :"reader";
GRANT INSERT ON :"schema".recommendation_feedback TO :"reader";
-- feedback_id is a serial column: recording feedback takes the next value of its sequence
GRANT USAGE ON SEQUENCE :"schema".recommendation_feedback_feedback_id_seq TO :"reader";
