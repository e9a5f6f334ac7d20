"""The stable customer -> bucket function, the same in Python and in DuckDB SQL.

Buckets let customer-partitioned work run as separate Dagster runs or machines; a customer never changes bucket
while the bucket count stays the same.
"""

import hashlib


def customer_bucket(customer_id: str, buckets: int) -> int:
    """The first 32 bits of md5(customer_id), modulo the bucket count."""
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    return int(hashlib.md5(customer_id.encode("utf-8")).hexdigest()[:8], 16) % buckets


def customer_bucket_sql(column: str, buckets: int) -> str:
    """The same function as a DuckDB SQL expression over a VARCHAR column."""
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    return f"(CAST('0x' || left(md5({column}), 8) AS UBIGINT) % {int(buckets)})"
