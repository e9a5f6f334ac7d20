"""The floor: one scan of the interactions with the GROUP BY that computes weighted affinity.

Every correct pipeline reads each interaction at least once and aggregates it per (customer, product); nothing
it does can cost less. Comparing the pipeline's time with this query's, on the same machine in the same run,
gives a ratio that does not depend on how fast the machine is.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import datetime

from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse, run

FLOOR_SQL = """
SELECT count(*) AS pairs, sum(weighted_affinity_score) AS total
FROM (
    SELECT customer_id,
           product_id,
           sum(CASE interaction_type
                   WHEN 'purchase'    THEN getvariable('weight_purchase')
                   WHEN 'cart_add'    THEN getvariable('weight_cart_add')
                   WHEN 'click'       THEN getvariable('weight_click')
                   WHEN 'view'        THEN getvariable('weight_view')
                   WHEN 'cart_remove' THEN getvariable('weight_cart_remove')
                   ELSE 0
               END
               * CASE
                   WHEN interaction_timestamp > getvariable('as_of') - INTERVAL 1 DAY  THEN 1.0
                   WHEN interaction_timestamp > getvariable('as_of') - INTERVAL 7 DAY  THEN 0.8
                   WHEN interaction_timestamp > getvariable('as_of') - INTERVAL 30 DAY THEN 0.5
                   ELSE 0.2
               END) AS weighted_affinity_score
    FROM customer_interactions
    WHERE interaction_timestamp <= getvariable('as_of')
    GROUP BY customer_id, product_id
)
"""


@dataclass(frozen=True)
class Floor:
    seconds: float  # the median of the runs
    runs: tuple[float, ...]
    pairs: int  # (customer, product) groups, to show the work was done


def measure_floor(store: Warehouse, tuning: Tuning, as_of: datetime, repeats: int = 3) -> Floor:
    """Run the floor query `repeats` times over the warehouse's interactions, each in a fresh session."""
    runs, pairs = [], 0
    for _ in range(repeats):
        with store.session(["customer_interactions"], variables={**tuning.as_dict(), "as_of": as_of}) as con:
            started = time.perf_counter()
            pairs, _total = run(con, FLOOR_SQL)[0]
            runs.append(time.perf_counter() - started)
    return Floor(seconds=statistics.median(runs), runs=tuple(runs), pairs=int(pairs))
