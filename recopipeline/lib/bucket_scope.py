"""One customer bucket's view of the warehouse (lib/shards.py), for the checks of a bucket's step.

A bucket's step is audited on its own rows: a whole-table invariant such as "every known customer has a
segment" holds for the bucket's customers once that bucket has run, whatever the other buckets hold yet.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import duckdb

from recopipeline.lib import shards
from recopipeline.lib.stages import CUSTOMER_SOURCES, customer_keyed
from recopipeline.lib.warehouse import Warehouse, run


@contextmanager
def bucket_session(
    store: Warehouse, inputs: Iterable[str], bucket: int, buckets: int, variables: Mapping[str, object] | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A session like `Warehouse.session` over `inputs`, where every customer-keyed input holds the bucket's rows
    only: the customer sources restricted to its customers, each per-customer table its bucket file (the
    candidate's, for the asset `store` stages)."""
    inputs = list(dict.fromkeys(inputs))
    whole = [name for name in inputs if not customer_keyed(name)]
    key = shards.bucket_key(bucket, buckets)
    with store.session(sorted({*whole, "customer_keys"}), variables=variables) as con:
        shards.restrict_sources(store, con, bucket, buckets, [n for n in inputs if n in CUSTOMER_SOURCES])
        for name in inputs:
            if not customer_keyed(name) or name in CUSTOMER_SOURCES:
                continue
            files = [path for path in store.files(name) if os.path.basename(path) == f"{key}.parquet"]
            if not files:
                raise shards.ShardError(f"'{name}' has no file of bucket {bucket} of {buckets}: compute it first")
            run(con, f"CREATE TEMP VIEW {name} AS SELECT * FROM read_parquet('{files[0]}')")
        yield con
