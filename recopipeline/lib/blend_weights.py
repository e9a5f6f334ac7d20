"""The blend's configuration as tables in a stage session: the weights of each A/B variant and their hash ranges."""

import duckdb

from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import load_sql, run


def create_strategy_weights(con: duckdb.DuckDBPyConnection, tuning: Tuning) -> None:
    """`strategy_weights` (variant, strategy, weight, priority in blend order) and `variant_buckets`."""
    run(con, "CREATE OR REPLACE TEMP TABLE strategy_weights "
             "(variant VARCHAR, strategy VARCHAR, weight DOUBLE, priority INTEGER)")
    for variant, weights in tuning.variant_strategy_weights().items():
        # the blend packs a strategy's priority into 4 bits of its strength key (product_recommendations.sql)
        assert len(weights) < 16, "at most 15 strategies"
        for priority, (strategy, weight) in enumerate(weights.items(), start=1):
            run(con, "INSERT INTO strategy_weights VALUES (?, ?, ?, ?)", [variant, strategy, weight, priority])
    run(con, "CREATE OR REPLACE TEMP TABLE variant_buckets (variant VARCHAR, lower_bound UBIGINT, upper_bound UBIGINT)")
    for variant, lower, upper in tuning.experiment().buckets():
        run(con, "INSERT INTO variant_buckets VALUES (?, ?, ?)", [variant, lower, upper])


def blend_sql(con: duckdb.DuckDBPyConnection, tuning: Tuning) -> str:
    """`sql/product_recommendations.sql` with its weight tables created in `con`."""
    create_strategy_weights(con, tuning)
    return load_sql("product_recommendations")
