"""Publishing: the top recommendations and product-page lists, written–audited–published to the serving database.

The asset sits downstream of `customer_top_recommendations`, so a failing blocking check there skips it and the
served version stays as it was. With customer buckets it publishes only when every bucket's tables are of this
night (a failed bucket keeps the old version served), all of them in the one transaction. Its warehouse table
summarises what is served (rows per variant and type).
"""

from collections.abc import Iterator

import dagster as dg
import duckdb
import pandas as pd

from recopipeline.defs.resources import ServingResource, TuningResource, WarehouseResource
from recopipeline.defs.stage import OWNERS, bucketed_assets, code_references, describe, require_buckets, resolve_as_of
from recopipeline.lib import settings
from recopipeline.lib.keys import owning_assets
from recopipeline.lib.warehouse import SQL_DIR, load_sql, run
from recopipeline.serving.publish import (
    CUSTOMER_COLUMNS,
    PLACEMENT_COLUMNS,
    RELATION_COLUMNS,
    RULE_COLUMNS,
    SEGMENT_COLUMNS,
    Expected,
    PublishError,
    publish,
)

GROUP = "publish"
SERVING_SQL = (
    "serving_customer_recommendations", "serving_product_relations", "serving_placement_lists",
    "serving_placement_rules",
)
BATCH_ROWS = 50_000
INPUTS = [
    "customer_top_recommendations",
    "product_similarity",
    "complementary_products",
    "products_bought_together",
    "products",
    "product_popularity",
    "product_trending",
    "product_keys",
    "customer_placement_recommendations",
    "merchandising_rules",
    "customer_segments",
    "customer_keys",
]


def serving_kind(url: str) -> str:
    return "postgres" if url.startswith("postgres") else "sqlite"


def batches(con: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...], order_by: str) -> Iterator[list]:
    """The table's rows as tuples in `columns` order, in batches; read to the end before the connection is reused."""
    result = con.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order_by}")
    while rows := result.fetchmany(BATCH_ROWS):
        yield rows


@dg.asset(
    group_name=GROUP,
    deps=owning_assets(INPUTS),
    description=(
        "Each customer's top recommendations (with A/B variant) and recently_viewed / buy_it_again lists, a "
        "cold-start and a trending list per variant, each product's similar / complementary / bought-together "
        "lists and the other placements' merchandising rules, published as a new version of the serving database: "
        "staged, audited against the warehouse, then switched live in one transaction."
    ),
    kinds={"duckdb", serving_kind(settings.serving_url())},
    owners=OWNERS,
    metadata=code_references(
        *(SQL_DIR / f"{name}.sql" for name in SERVING_SQL)
    ),
)
def published_recommendations(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    tuning: TuningResource,
    serving: ServingResource,
) -> dg.MaterializeResult:
    store = warehouse.get()
    values = tuning.get()
    experiment = values.experiment()
    as_of = resolve_as_of(context, store)
    buckets = settings.customer_shards()
    if buckets > 1:  # every bucket's tables of this night, or the served version stays
        require_buckets(store, [name for name in INPUTS if name in bucketed_assets()], buckets, values, as_of)
    variables = {**values.as_dict(), "relations_per_product": serving.relations_per_product, "as_of": as_of}
    with store.session(INPUTS, variables=variables) as con:
        run(con, "CREATE TEMP TABLE serving_variants (variant VARCHAR)")
        for name in experiment.names:
            run(con, "INSERT INTO serving_variants VALUES (?)", [name])
        run(con, f"CREATE TEMP TABLE serving_rows AS {load_sql('serving_customer_recommendations')}")
        run(con, f"CREATE TEMP TABLE serving_relations AS {load_sql('serving_product_relations')}")
        run(con, f"CREATE TEMP TABLE serving_placements AS {load_sql('serving_placement_lists')}")
        run(con, f"CREATE TEMP TABLE merchandising_rule_products AS {load_sql('merchandising_rule_products')}")
        run(con, f"CREATE TEMP TABLE serving_rules AS {load_sql('serving_placement_rules')}")
        run(con, "CREATE TEMP TABLE serving_segments AS "
                 "SELECT k.customer_id, s.customer_segment FROM customer_segments AS s JOIN customer_keys AS k "
                 "USING (customer_key)")
        ((rows, customers),) = run(
            con, "SELECT count(*), count(DISTINCT customer_id) FROM customer_top_recommendations"
        )
        ((relations, placements, rules, segments),) = run(
            con,
            "SELECT (SELECT count(*) FROM serving_relations), (SELECT count(*) FROM serving_placements), "
            "(SELECT count(*) FROM serving_rules), (SELECT count(*) FROM serving_segments)",
        )
        expected = Expected(
            int(rows), int(customers), int(relations), tuple(experiment.names), int(placements), int(rules),
            int(segments),
        )
        database = serving.database()
        try:
            publication = publish(
                database,
                batches(con, "serving_rows", CUSTOMER_COLUMNS, "customer_id, variant, rank"),
                batches(con, "serving_relations", RELATION_COLUMNS, "product_id, relation, rank"),
                expected,
                placement_batches=batches(con, "serving_placements", PLACEMENT_COLUMNS, "customer_id, placement, rank"),
                rule_batches=batches(con, "serving_rules", RULE_COLUMNS, "placement, rule_id, product_id"),
                segment_batches=batches(con, "serving_segments", SEGMENT_COLUMNS, "customer_id"),
                run_id=context.run.run_id,
                experiment=experiment.to_json(),
                keep_versions=serving.keep_versions,
                max_shrink=serving.max_shrink,
            )
        except PublishError as error:
            raise dg.Failure(description=str(error)) from None
        finally:
            database.dispose()
        store.write(
            con,
            "published_recommendations",
            """
            SELECT CASE customer_id WHEN '__cold_start__' THEN 'cold_start' WHEN '__trending__' THEN 'trending'
                        ELSE 'customers' END AS list,
                   variant, recommendation_type,
                   count(DISTINCT customer_id) AS customers, count(*) AS rows, round(avg(score), 6) AS mean_score
            FROM serving_rows GROUP BY ALL
            """,
            order_by="list, variant, recommendation_type",
        )
        metadata = describe(con, store, "published_recommendations", None)
    store.refresh_catalog(["published_recommendations"])
    checks = pd.DataFrame(
        [(name, c["passed"], str(c["expected"]), str(c["actual"])) for name, c in publication.checks.items()],
        columns=["audit", "passed", "expected", "actual"],
    )
    context.log.info(f"serving version {publication.version} is live in {database.describe()}")
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "serving_version": dg.MetadataValue.int(publication.version),
            "serving_database": dg.MetadataValue.text(database.describe()),
            "published_customer_rows": dg.MetadataValue.int(publication.customer_rows),
            "published_customers": dg.MetadataValue.int(publication.customers),
            "published_relation_rows": dg.MetadataValue.int(publication.relation_rows),
            "published_placement_rows": dg.MetadataValue.int(expected.placement_rows),
            "published_placement_rules": dg.MetadataValue.int(expected.rule_rows),
            "publish_seconds": dg.MetadataValue.float(round(publication.seconds, 3)),
            "expired_versions": dg.MetadataValue.text(", ".join(map(str, publication.expired)) or "-"),
            "variants": dg.MetadataValue.text(", ".join(experiment.names)),
            "audit": dg.MetadataValue.md(checks.to_markdown(index=False)),
        }
    )
