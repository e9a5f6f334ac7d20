"""`recopipeline bench --shards N`: the nightly path as one run, then with its derived stages over N customer buckets
(lib/shards.py).

The nightly path is the validated ingest of every source (as the source assets do it, once: the buckets read the
same sources) and then every derived stage. The one run is every stage in one process, timed stage by stage; the
sharded run is phase 1 per bucket, phase 2 once, phase 3 per bucket, each step in a process of its own, at most
`processes` at a time, each bucket's step with its share of the DuckDB budget (`shards.bucket_share`). Reported:
each step's wall and CPU time and its process's peak RSS; the work (the CPU seconds of the steps added up, the
steps' wall seconds added up, and the sharded run's wall time, which adds the processes' start) and the critical
path (the slowest bucket of each per-bucket phase plus phase 2) against the one run, with the ingest added to both;
the largest peak RSS of a bucket's step against the largest of the one run's per-customer stages; and whether every
table got the one run's row count. CPU seconds compare the work whatever the threads of each step; the steps' wall
seconds add up to it only when each step has the machine's cores to itself.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from recopipeline.bench.memory import RssSampler
from recopipeline.bench.pipeline import ingest_validated
from recopipeline.lib import shards
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.generator import SCALES
from recopipeline.lib.hourly import HOUR, floor_hour, source_hours
from recopipeline.lib.settings import first_partition_hour
from recopipeline.lib.sources import resolve_location
from recopipeline.lib.stages import STAGES, Split, latest_event_time, run_stage, stage_order
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse

GIB = 2**30
PER_CUSTOMER = {s.name for s in STAGES if s.split is Split.CUSTOMERS}


def time_shards(
    scale: str,
    home: Path,
    buckets: int,
    processes: int = 2,
    *,
    memory_limit: str = "3GB",
    threads: int = 2,
    tuning: Tuning | None = None,
    seed: int = 42,
    keep: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Time the nightly path at `scale` as one run and with its derived stages over `buckets` buckets; a JSON-ready
    dict."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    say = progress or (lambda _line: None)
    tuning = tuning or Tuning()
    location = resolve_location(f"synthetic:{scale}", home / "input", seed=seed)
    root = home / "bench" / f"shards-{scale}" / "warehouse"
    shutil.rmtree(root, ignore_errors=True)
    spill = str(home / "bench" / "spill")
    store = Warehouse(str(root), memory_limit=memory_limit, threads=threads, temp_directory=spill)

    now = floor_hour(datetime.now(timezone.utc).replace(tzinfo=None))
    first, last = source_hours(location, first_partition_hour(), now)
    say("ingest (validated, once for both):")
    ingest, one_run, rows = [], [], {}
    with RssSampler() as sampler:
        for source in SOURCES:
            ingest.append(_timed(sampler, source, lambda s=source: ingest_validated(
                store, location, s, tuning, (first, last + HOUR)), say))
        as_of = latest_event_time(store)
        say(f"one run (as of {as_of.isoformat()}):")
        for spec in stage_order():
            one_run.append(_timed(sampler, spec.name, lambda spec=spec: run_stage(store, spec, tuning, as_of), say))
            rows[spec.name] = one_run[-1]["rows"]
    ingest_seconds = sum(s["seconds"] for s in ingest)
    one_run_seconds = sum(s["seconds"] for s in one_run)

    say(f"{buckets} buckets, {processes} processes at a time:")
    result = shards.run_sharded(store, tuning, as_of, buckets, processes)
    for step in result.steps:
        say(f"  {_step_name(step):<36} {step.seconds:8.2f} s  cpu {step.cpu_seconds:8.2f} s  "
            f"peak {step.peak_rss_bytes / GIB:5.2f} GiB")
    sharded_rows: dict[str, int] = {}
    for step in result.steps:
        for name, count in step.rows.items():
            if name in rows:
                sharded_rows[name] = sharded_rows.get(name, 0) + count
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    one_run_peak = max(s["peak_rss_bytes"] for s in one_run if s["asset"] in PER_CUSTOMER)
    bucket_peak = max(s.peak_rss_bytes for s in result.steps if s.bucket is not None)
    nightly = ingest_seconds + one_run_seconds
    one_run_cpu = sum(s["cpu_seconds"] for s in one_run)
    sharded_cpu = sum(s.cpu_seconds for s in result.steps)
    bucket_store = shards.bucket_share(store, buckets, processes)
    return {
        "scale": scale,
        "buckets": buckets,
        "processes": processes,
        "as_of": as_of.isoformat(),
        "settings": {"memory_limit": memory_limit, "threads": threads, "cpus": os.cpu_count(),
                     "bucket_memory_limit": bucket_store.memory_limit, "bucket_threads": bucket_store.threads},
        "ingest": {"seconds": ingest_seconds, "cpu_seconds": sum(s["cpu_seconds"] for s in ingest),
                   "sources": ingest},
        "one_run": {"seconds": one_run_seconds, "cpu_seconds": one_run_cpu,
                    "peak_rss_bytes": max(s["peak_rss_bytes"] for s in one_run),
                    "per_customer_peak_rss_bytes": one_run_peak, "stages": one_run},
        "sharded": result.as_dict() | {"bucket_peak_rss_bytes": bucket_peak,
                                       "cpu_seconds": sharded_cpu},
        "rows_match": sharded_rows == rows,
        "ratios": {
            "work_over_one_run": result.work_seconds / one_run_seconds,
            "cpu_work_over_one_run": sharded_cpu / one_run_cpu,
            "wall_over_one_run": result.seconds / one_run_seconds,
            "critical_path_over_one_run": result.critical_path_seconds / one_run_seconds,
            "nightly_work_over_one_run": (ingest_seconds + result.work_seconds) / nightly,
            "nightly_wall_over_one_run": (ingest_seconds + result.seconds) / nightly,
            "bucket_peak_over_one_run_per_customer_peak": bucket_peak / one_run_peak,
        },
        "per_customer_rows": {s.name: rows[s.name] for s in STAGES if s.split is Split.CUSTOMERS},
    }


def _timed(sampler: RssSampler, asset: str, work: Callable[[], int], say: Callable[[str], None]) -> dict:
    sampler.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    rows = work()
    timing = {"asset": asset, "rows": rows, "seconds": time.perf_counter() - wall,
              "cpu_seconds": time.process_time() - cpu, "peak_rss_bytes": sampler.peak()}
    say(f"  {asset:<36} {rows:>12,} rows {timing['seconds']:8.2f} s  peak {timing['peak_rss_bytes'] / GIB:5.2f} GiB")
    return timing


def _step_name(step: shards.StepResult) -> str:
    return step.phase if step.bucket is None else f"{step.phase} bucket {step.bucket}"


def summary_table(result: dict) -> str:
    """The result as a Markdown table: one row per step, then the one run and the ratios."""
    one = result["one_run"]
    sharded = result["sharded"]
    settings = result["settings"]
    lines = [
        f"scale {result['scale']}: {result['buckets']} buckets, {result['processes']} processes at a time; DuckDB "
        f"{settings['memory_limit']} and {settings['threads']} threads for the one run, the split and the item side, "
        f"{settings['bucket_memory_limit']} and {settings['bucket_threads']} for a bucket's step",
        "",
        "| step | seconds | CPU seconds | peak RSS (GiB) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for step in sharded["steps"]:
        name = step["phase"] if step["bucket"] is None else f"{step['phase']} bucket {step['bucket']}"
        lines.append(f"| {name} | {step['seconds']:.2f} | {step['cpu_seconds']:.2f} | "
                     f"{step['peak_rss_bytes'] / GIB:.2f} |")
    ratios = result["ratios"]
    ingest = result["ingest"]["seconds"]
    lines += [
        f"| **sharded run** (wall, processes' start included) | {sharded['seconds']:.2f} | | "
        f"{sharded['bucket_peak_rss_bytes'] / GIB:.2f} (a bucket's step) |",
        f"| **one run** (every stage, one process) | {one['seconds']:.2f} | {one['cpu_seconds']:.2f} | "
        f"{one['per_customer_peak_rss_bytes'] / GIB:.2f} (a per-customer stage) |",
        f"| ingest (validated, once for both) | {ingest:.2f} | {result['ingest']['cpu_seconds']:.2f} | |",
        "",
        f"derived stages: work in CPU seconds {sharded['cpu_seconds']:.2f} = {ratios['cpu_work_over_one_run']:.2f} x "
        f"the one run's, sharded run's wall {ratios['wall_over_one_run']:.2f} x, the steps' wall seconds added up "
        f"{sharded['work_seconds']:.2f} = {ratios['work_over_one_run']:.2f} x; "
        f"critical path {sharded['critical_path_seconds']:.2f} s = {ratios['critical_path_over_one_run']:.2f} x",
        f"nightly path (ingest + derived): work {ratios['nightly_work_over_one_run']:.2f} x the one run's, "
        f"wall {ratios['nightly_wall_over_one_run']:.2f} x; a bucket step's peak RSS "
        f"{ratios['bucket_peak_over_one_run_per_customer_peak']:.2f} x the one run's per-customer peak; "
        f"rows {'the same' if result['rows_match'] else 'DIFFERENT'} as the one run's",
    ]
    return "\n".join(lines)
