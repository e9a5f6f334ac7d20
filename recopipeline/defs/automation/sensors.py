"""The file sensor: when a source file lands (or changes) in the input directory, ingest what it holds.

File mode only (RECOPIPELINE_SOURCE names a directory). The cursor remembers every file seen with its size and
modification time, so each new or changed file starts exactly one run of `ingest_sources`: the snapshot
sources (`customers`, `products`, `merchandising_rules`) are ingested whole; an event file's hours (from its first to its last event,
within the partitions that exist) are ingested in one run. The hour in progress is a partition too: its events
so far are ingested now, and the hourly refresh ingests the whole hour once it has ended.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb

from recopipeline.defs.automation.jobs import SNAPSHOT_SOURCES, ingest_sources_job
from recopipeline.defs.partitions import first_hour, hourly_partitions, range_tags
from recopipeline.defs.resources import SourceResource
from recopipeline.lib.contract import EVENT_SOURCES, SOURCES
from recopipeline.lib.hourly import HOUR, floor_hour, parse_hour_key
from recopipeline.lib.ingest import event_time_span
from recopipeline.lib.run_config import configured_run_config
from recopipeline.lib.sources import SourceError, source_files

MINIMUM_INTERVAL_SECONDS = 60


def list_source_files(location: Path) -> dict[str, str]:
    """Every source file in the location -> its source name."""
    found: dict[str, str] = {}
    for name in (*SNAPSHOT_SOURCES, *EVENT_SOURCES):
        try:
            found |= {str(path): name for path in source_files(location, SOURCES[name])}
        except SourceError:  # no file for this source (yet)
            continue
    return found


def fingerprint(path: str) -> str:
    stat = Path(path).stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def event_hours(path: str, source: str, last_partition: datetime | None) -> tuple[datetime, datetime] | None:
    """The first and last partition hour holding events of the file, or None when it holds none we can place.

    A file the reader cannot use gets the last partition: its run fails with the reader's one-line error, so
    the file is never skipped in silence.
    """
    if last_partition is None:
        return None
    try:
        span = event_time_span([Path(path)], SOURCES[source], before=last_partition + HOUR)
    except (SourceError, duckdb.Error):
        return last_partition, last_partition
    if span is None:
        return None
    start = max(floor_hour(span[0]), first_hour())  # older events belong to the first partition
    end = min(max(floor_hour(span[1]), first_hour()), last_partition)
    return (start, end) if start <= end else None


def file_run_request(
    path: str, source: str, last_partition: datetime | None, run_config: dict | None = None
) -> dg.RunRequest | None:
    key = f"{path}@{fingerprint(path)}"
    if source in SNAPSHOT_SOURCES:
        return dg.RunRequest(run_key=key, asset_selection=[dg.AssetKey(source)], tags={"recopipeline/file": path},
                             run_config=run_config or {})
    window = event_hours(path, source, last_partition)
    if window is None:
        return None
    return dg.RunRequest(
        run_key=key,
        asset_selection=[dg.AssetKey(source)],
        tags={**range_tags(*window), "recopipeline/file": path},
        run_config=run_config or {},
    )


@dg.sensor(
    name="source_files_sensor",
    job=ingest_sources_job,
    minimum_interval_seconds=MINIMUM_INTERVAL_SECONDS,
    description="Ingest each new or changed file in the input directory (file mode).",
)
def source_files_sensor(context: dg.SensorEvaluationContext, source: SourceResource):
    location = Path(source.source)
    if not location.is_dir():
        return dg.SkipReason(f"source {source.source!r} is not a directory: the file sensor watches file mode only")
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    files = list_source_files(location)
    changed = {path: name for path, name in sorted(files.items()) if seen.get(path) != fingerprint(path)}
    if not changed:
        return dg.SkipReason("no new or changed source files")
    last_key = hourly_partitions.get_last_partition_key()
    last_partition = parse_hour_key(last_key) if last_key else None
    requests = []
    run_config = configured_run_config()  # RECOPIPELINE_RUN_CONFIG, as for the schedules
    for path, name in changed.items():
        request = file_run_request(path, name, last_partition, run_config)
        if request is None:
            context.log.info(f"{path}: no events in an hour that has started; the hourly refresh will ingest them")
        else:
            requests.append(request)
        seen[path] = fingerprint(path)
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))
