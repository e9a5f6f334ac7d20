"""Steps of lib/shards.py as test_shards.py runs them in the bucket processes: wrong shard-local shortcuts, and a
step killed half-way. Each changes only the process it runs in (the process runs one step and ends), and this module
imports nothing heavier than the shards, so the processes start fast."""

from __future__ import annotations

import os
import signal

from recopipeline.lib import shards
from recopipeline.lib.warehouse import Warehouse

# Each bucket keeps only its own most popular products per segment (its own top popular_products) before the
# buckets' totals are added up.
CUT_PER_BUCKET = """
SELECT * FROM ({totals})
QUALIFY row_number() OVER (PARTITION BY segment ORDER BY weighted_score DESC, product_key)
        <= getvariable('popular_products')
"""
# Each bucket keeps only the products that trend within it (interest above its own baseline) before the sum.
TRENDING_PER_BUCKET = """
SELECT * FROM ({interest}) WHERE coalesce(recent_score, 0) > coalesce(baseline_score, 0) / 7
"""


def _with_partial(step: shards.Step, name: str, change) -> shards.StepResult:
    original = shards.partial_sql
    shards.partial_sql = lambda partial: change(original(partial)) if partial == name else original(partial)
    return shards.run_step(step)


def cut_per_bucket_step(step: shards.Step) -> shards.StepResult:
    """The wrong shortcut: popularity totals cut to each bucket's top products, before the sum."""
    return _with_partial(step, "shard_popularity_totals", lambda sql: CUT_PER_BUCKET.format(totals=sql))


def trending_per_bucket_step(step: shards.Step) -> shards.StepResult:
    """The wrong shortcut: each bucket's trending products only, so a product trending over all buckets but in
    none alone is lost."""
    return _with_partial(step, "shard_trending_interest", lambda sql: TRENDING_PER_BUCKET.format(interest=sql))


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
