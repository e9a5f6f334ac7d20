"""`recopipeline bench --shards N`: the derived stages as one run, then over N customer buckets (lib/shards.py).

Both start from the same sources (the synthetic data of a scale, copied into the warehouse as typed tables). The
one run is every stage in one process, timed stage by stage; the sharded run is phase 1 per bucket, phase 2 once,
phase 3 per bucket, each step in a process of its own, at most `processes` at a time. Reported: each step's wall
and CPU time and its process's peak RSS; the work (the steps' times added up) and the critical path (the slowest
bucket of each per-bucket phase plus phase 2) against the one run; and whether every table got the one run's row
count.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from recopipeline.bench.memory import RssSampler
from recopipeline.bench.pipeline import ingest_source
from recopipeline.lib import shards
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.generator import SCALES
from recopipeline.lib.sources import resolve_location
from recopipeline.lib.stages import STAGES, Split, latest_event_time, run_stage, stage_order
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse

GIB = 2**30


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
    """Time the derived stages at `scale` as one run and over `buckets` buckets; a JSON-ready dict."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    say = progress or (lambda _line: None)
    tuning = tuning or Tuning()
    location = resolve_location(f"synthetic:{scale}", home / "input", seed=seed)
    root = home / "bench" / f"shards-{scale}" / "warehouse"
    shutil.rmtree(root, ignore_errors=True)
    spill = str(home / "bench" / "spill")
    store = Warehouse(str(root), memory_limit=memory_limit, threads=threads, temp_directory=spill)
    for source in SOURCES:
        ingest_source(store, location, source)
    as_of = latest_event_time(store)

    say(f"one run (as of {as_of.isoformat()}):")
    one_run, rows = [], {}
    with RssSampler() as sampler:
        for spec in stage_order():
            sampler.reset()
            wall, cpu = time.perf_counter(), time.process_time()
            rows[spec.name] = run_stage(store, spec, tuning, as_of)
            one_run.append({"asset": spec.name, "seconds": time.perf_counter() - wall,
                            "cpu_seconds": time.process_time() - cpu, "peak_rss_bytes": sampler.peak()})
            say(f"  {spec.name:<36} {rows[spec.name]:>12,} rows {one_run[-1]['seconds']:8.2f} s")
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
    return {
        "scale": scale,
        "buckets": buckets,
        "processes": processes,
        "as_of": as_of.isoformat(),
        "settings": {"memory_limit": memory_limit, "threads": threads, "cpus": os.cpu_count()},
        "one_run": {"seconds": one_run_seconds, "cpu_seconds": sum(s["cpu_seconds"] for s in one_run),
                    "peak_rss_bytes": max(s["peak_rss_bytes"] for s in one_run), "stages": one_run},
        "sharded": result.as_dict(),
        "rows_match": sharded_rows == rows,
        "ratios": {
            "work_over_one_run": result.work_seconds / one_run_seconds,
            "critical_path_over_one_run": result.critical_path_seconds / one_run_seconds,
            "wall_over_one_run": result.seconds / one_run_seconds,
        },
        "per_customer_rows": {s.name: rows[s.name] for s in STAGES if s.split is Split.CUSTOMERS},
    }


def _step_name(step: shards.StepResult) -> str:
    return step.phase if step.bucket is None else f"{step.phase} bucket {step.bucket}"


def summary_table(result: dict) -> str:
    """The result as a Markdown table: one row per step, then the one run and the ratios."""
    one = result["one_run"]
    sharded = result["sharded"]
    lines = [
        f"scale {result['scale']}: {result['buckets']} buckets, {result['processes']} processes at a time",
        "",
        "| step | seconds | CPU seconds | peak RSS (GiB) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for step in sharded["steps"]:
        name = step["phase"] if step["bucket"] is None else f"{step['phase']} bucket {step['bucket']}"
        lines.append(f"| {name} | {step['seconds']:.2f} | {step['cpu_seconds']:.2f} | "
                     f"{step['peak_rss_bytes'] / GIB:.2f} |")
    ratios = result["ratios"]
    lines += [
        f"| **sharded run** (wall) | {sharded['seconds']:.2f} | | "
        f"{max(s['peak_rss_bytes'] for s in sharded['steps']) / GIB:.2f} |",
        f"| **one run** (every stage, one process) | {one['seconds']:.2f} | {one['cpu_seconds']:.2f} | "
        f"{one['peak_rss_bytes'] / GIB:.2f} |",
        "",
        f"work (steps added up) {sharded['work_seconds']:.2f} s = {ratios['work_over_one_run']:.2f} x the one run; "
        f"critical path {sharded['critical_path_seconds']:.2f} s = {ratios['critical_path_over_one_run']:.2f} x; "
        f"rows {'the same' if result['rows_match'] else 'DIFFERENT'} as the one run's",
    ]
    return "\n".join(lines)
