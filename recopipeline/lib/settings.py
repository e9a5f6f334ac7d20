"""Where things live, from environment variables with local defaults (the embedded setup)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

LOCAL_HOME = Path(os.environ.get("RECOPIPELINE_HOME", Path.cwd() / ".recopipeline"))


def warehouse_root() -> str:
    """RECOPIPELINE_WAREHOUSE: the storage root of the Parquet warehouse (a directory or an s3:// URL)."""
    return os.environ.get("RECOPIPELINE_WAREHOUSE") or str(LOCAL_HOME / "warehouse")


def source_spec() -> str:
    """RECOPIPELINE_SOURCE: `synthetic:<scale>`, `online_retail:sample`, `online_retail:<file>` or a directory."""
    return os.environ.get("RECOPIPELINE_SOURCE") or "synthetic:xs"


def serving_url() -> str:
    """RECOPIPELINE_SERVING_URL: SQLAlchemy URL of the serving database."""
    return os.environ.get("RECOPIPELINE_SERVING_URL") or f"sqlite:///{LOCAL_HOME / 'serving.db'}"


def pinned_as_of() -> datetime | None:
    """RECOPIPELINE_AS_OF: an optional pinned as-of time for unpartitioned runs (ISO 8601, UTC)."""
    value = os.environ.get("RECOPIPELINE_AS_OF")
    return parse_as_of(value) if value else None


def parse_as_of(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as error:
        raise ValueError(f"as-of time {value!r} is not an ISO 8601 timestamp") from error
    if parsed.tzinfo is not None:  # stored timestamps are naive UTC
        parsed = parsed.replace(tzinfo=None) - parsed.utcoffset()
    return parsed


def duckdb_memory_limit() -> str:
    """RECOPIPELINE_DUCKDB_MEMORY: memory limit of each step's DuckDB (it spills to disk beyond it)."""
    return os.environ.get("RECOPIPELINE_DUCKDB_MEMORY") or "3GB"


def duckdb_threads() -> int:
    return int(os.environ.get("RECOPIPELINE_DUCKDB_THREADS") or os.cpu_count() or 2)
