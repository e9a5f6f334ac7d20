"""Steps of lib/shards.py as test_shards.py runs them in the bucket processes: wrong shard-local shortcuts, and a
step killed half-way. Each changes only the process it runs in (the process runs one step and ends), and this module
imports nothing heavier than the shards, so the processes start fast."""

from __future__ import annotations

import os
import signal

from recopipeline.lib import shards
from recopipeline.lib.warehouse import Warehouse

# Each bucket keeps only its own strongest collaborative pairs (its own common customers, its own top K per
# product) before the buckets' sums are added up.
PRUNED_PAIRS = """
SELECT * FROM ({pairs})
WHERE common_customers >= getvariable('cf_min_common_customers')
QUALIFY row_number() OVER (PARTITION BY product_key_1 ORDER BY dot DESC, product_key_2) <= getvariable('cf_top_k')
"""


def _with_partial(step: shards.Step, name: str, change) -> shards.StepResult:
    original = shards.partial_sql
    shards.partial_sql = lambda partial: change(original(partial)) if partial == name else original(partial)
    return shards.run_step(step)


def pruned_pairs_step(step: shards.Step) -> shards.StepResult:
    """The wrong shortcut: collaborative pairs pruned and cut to the top K per bucket, before the sum."""
    return _with_partial(step, "shard_collaborative_pairs", lambda sql: PRUNED_PAIRS.format(pairs=sql))


def baskets_by_customer_step(step: shards.Step) -> shards.StepResult:
    """The wrong shortcut: baskets of the bucket's customers' order lines, so an order of two customers in two
    buckets counts as two smaller baskets."""
    return _with_partial(step, "shard_basket_pairs", lambda sql: sql.replace(shards.BUCKET_ORDERS, "orders"))


def killed_on_second_file_step(step: shards.Step) -> shards.StepResult:
    """The step is killed (SIGKILL) when it is about to put its second file in place: its first file is new, the
    second is a finished temporary file that never replaces the table's."""
    put = Warehouse.put_file
    puts = []

    def put_or_die(self, asset, partition, local_file):
        puts.append(asset)
        if len(puts) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        put(self, asset, partition, local_file)

    Warehouse.put_file = put_or_die
    return shards.run_step(step)
