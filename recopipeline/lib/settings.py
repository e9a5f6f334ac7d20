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


def serving_schema() -> str | None:
    """RECOPIPELINE_SERVING_SCHEMA: the Postgres schema of the serving tables (default: the search path's)."""
    return os.environ.get("RECOPIPELINE_SERVING_SCHEMA") or None


def serving_cache_seconds() -> float:
    """RECOPIPELINE_SERVING_CACHE_SECONDS: how long the read API caches an answer in process (0 = off)."""
    return float(os.environ.get("RECOPIPELINE_SERVING_CACHE_SECONDS") or 60)


def mcp_token() -> str | None:
    """RECOPIPELINE_MCP_TOKEN: the bearer token the MCP server requires over HTTP."""
    return os.environ.get("RECOPIPELINE_MCP_TOKEN") or None


def run_config_file() -> str | None:
    """RECOPIPELINE_RUN_CONFIG: a YAML run config (launchpad shape) for `materialize` and the schedules' runs."""
    return os.environ.get("RECOPIPELINE_RUN_CONFIG") or None


def customer_shards() -> int:
    """RECOPIPELINE_SHARDS: the number of customer buckets the per-customer assets are partitioned into (1: none)."""
    value = os.environ.get("RECOPIPELINE_SHARDS") or "1"
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"RECOPIPELINE_SHARDS {value!r} is not a whole number of buckets >= 1")
    return int(value)


STEP_EXECUTORS = ("default", "k8s")


def step_executor() -> str:
    """RECOPIPELINE_EXECUTOR: `default` (in process or a process per step, chosen per run) or `k8s` (a Kubernetes
    Job per step, dagster-k8s's k8s_job_executor; recopipeline/deploy/k8s)."""
    value = os.environ.get("RECOPIPELINE_EXECUTOR") or "default"
    if value not in STEP_EXECUTORS:
        raise ValueError(f"RECOPIPELINE_EXECUTOR {value!r} is not one of {', '.join(STEP_EXECUTORS)}")
    return value


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


DEFAULT_PARTITION_START = "2026-09-30"  # the synthetic data's last day: 90 days of history, then hour by hour


def partition_start() -> str:
    """RECOPIPELINE_PARTITION_START: the first hourly partition of the event sources (ISO date or hour, UTC).

    The first partition also holds every event before it (the history); see docs/refresh.md.
    """
    value = os.environ.get("RECOPIPELINE_PARTITION_START") or DEFAULT_PARTITION_START
    start = parse_as_of(value)
    if (start.minute, start.second, start.microsecond) != (0, 0, 0):
        raise ValueError(f"RECOPIPELINE_PARTITION_START {value!r} must be a whole hour (UTC)")
    return start.strftime("%Y-%m-%d-%H:%M")


def first_partition_hour() -> datetime:
    """The start of the first hourly partition, naive UTC (see `partition_start`)."""
    return datetime.strptime(partition_start(), "%Y-%m-%d-%H:%M")


def duckdb_memory_limit() -> str:
    """RECOPIPELINE_DUCKDB_MEMORY: memory limit of each step's DuckDB (it spills to disk beyond it)."""
    return os.environ.get("RECOPIPELINE_DUCKDB_MEMORY") or "3GB"


def duckdb_threads() -> int:
    return int(os.environ.get("RECOPIPELINE_DUCKDB_THREADS") or os.cpu_count() or 2)
