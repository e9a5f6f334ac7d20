"""One benchmark run: data for a scale, the nightly and hourly paths step by step, and the floor, as a JSON-ready
dict."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb

from recopipeline.bench.floor import measure_floor
from recopipeline.bench.memory import RssSampler, lifetime_peak_rss
from recopipeline.bench.pipeline import ingest_validated
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.generator import SCALES
from recopipeline.lib.hourly import HOUR, floor_hour, hour_key, source_hours
from recopipeline.lib.refresh import refresh_hour
from recopipeline.lib.settings import first_partition_hour
from recopipeline.lib.sources import resolve_location
from recopipeline.lib.stages import hourly_stages, latest_event_time, run_stage, stage_order
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse

GIB = 2**30
HOURLY_ASSET = "hourly_customer_refresh"
HOURLY_PLACEMENT_ASSET = "hourly_placement_refresh"
Progress = Callable[[str], None]


@dataclass
class StageTiming:
    asset: str
    kind: str  # "ingest" (a source validated into the warehouse), "derived" (a stage) or "refresh" (hourly)
    seconds: float
    cpu_seconds: float
    rows: int
    peak_rss_bytes: int


def _timed(sampler: RssSampler, asset: str, kind: str, work: Callable[[], int], say: Progress) -> StageTiming:
    sampler.reset()
    wall, cpu = time.perf_counter(), time.process_time()
    rows = work()
    timing = StageTiming(asset, kind, time.perf_counter() - wall, time.process_time() - cpu, rows, sampler.peak())
    say(f"  {asset:<34} {rows:>13,} rows {timing.seconds:8.2f} s  cpu {timing.cpu_seconds:8.2f} s  "
        f"peak {timing.peak_rss_bytes / GIB:5.2f} GiB")
    return timing


def _ingest_all(
    sampler: RssSampler, store: Warehouse, location: Path, tuning: Tuning, window: tuple[datetime, datetime],
    say: Progress,
) -> list[StageTiming]:
    """Ingest every source (the event sources' hours of `window`), timed one by one."""
    return [
        _timed(sampler, source, "ingest", lambda s=source: ingest_validated(store, location, s, tuning, window), say)
        for source in SOURCES
    ]


def _hourly_path(
    sampler: RssSampler, store: Warehouse, location: Path, tuning: Tuning, hour: datetime, say: Progress
) -> tuple[list[StageTiming], int]:
    """Ingest `hour` and the snapshots again, recompute the hourly whole-table stages (trending), then refresh the
    customers active in it; returns the timings and how many customers were refreshed."""
    say(f"hourly path: the hour {hour_key(hour)} (as of its end):")
    timings = _ingest_all(sampler, store, location, tuning, (hour, hour + HOUR), say)
    touched = 0

    def refresh() -> int:
        nonlocal touched
        result = refresh_hour(
            store, HOURLY_ASSET, hour, tuning, as_of=hour + HOUR, lists_asset=HOURLY_PLACEMENT_ASSET
        )
        touched = result.touched_customers
        return result.rows

    for spec in hourly_stages():
        timings.append(_timed(
            sampler, spec.name, "derived", lambda spec=spec: run_stage(store, spec, tuning, hour + HOUR), say
        ))
    timings.append(_timed(sampler, HOURLY_ASSET, "refresh", refresh, say))
    return timings, touched


def run_bench(
    scale: str,
    home: Path,
    *,
    memory_limit: str = "3GB",
    threads: int = 2,
    floor_repeats: int = 3,
    tuning: Tuning | None = None,
    seed: int = 42,
    keep: bool = False,
    progress: Progress | None = None,
) -> dict:
    """Benchmark the nightly path, then the hourly path of the data's newest hour, at `scale`.

    Data is cached under `home/input`; the warehouse is scratch. The hourly path ingests that hour (and the
    snapshots) again and refreshes the customers active in it against the nightly tables, as `hourly_refresh`.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    say = progress or (lambda _line: None)
    tuning = tuning or Tuning()

    started = time.perf_counter()
    cached = (home / "input" / f"synthetic-{scale}-seed{seed}" / "_SUCCESS").exists()
    say(f"data: scale {scale} ({'cached' if cached else 'generating'}) under {home / 'input'}")
    location = resolve_location(f"synthetic:{scale}", home / "input", seed=seed)
    generation_seconds = None if cached else time.perf_counter() - started

    root = home / "bench" / scale / "warehouse"
    shutil.rmtree(root, ignore_errors=True)
    spill = home / "bench" / "spill"
    store = Warehouse(root=str(root), memory_limit=memory_limit, threads=threads, temp_directory=str(spill))

    first, last = source_hours(location, first_partition_hour(), floor_hour(datetime.now(timezone.utc).replace(tzinfo=None)))
    stages: list[StageTiming] = []
    with RssSampler() as sampler:
        say(f"nightly path: ingest (hours {hour_key(first)} .. {hour_key(last)}):")
        stages += _ingest_all(sampler, store, location, tuning, (first, last + HOUR), say)
        as_of = latest_event_time(store)
        floor_before = measure_floor(store, tuning, as_of, repeats=floor_repeats)
        say(f"nightly path: rebuild (as of {as_of.isoformat()}):")
        for stage in stage_order():
            stages.append(_timed(sampler, stage.name, "derived", lambda s=stage: run_stage(store, s, tuning, as_of), say))
        floor_after = measure_floor(store, tuning, as_of, repeats=floor_repeats)
        peak = max(sampler.peak(), max(s.peak_rss_bytes for s in stages))

        hour = floor_hour(as_of - timedelta(microseconds=1))  # the newest hour that holds events
        hourly, touched = _hourly_path(sampler, store, location, tuning, hour, say)
        hourly_peak = max(s.peak_rss_bytes for s in hourly)

    floor_runs = sorted(floor_before.runs + floor_after.runs)
    floor_seconds = floor_runs[len(floor_runs) // 2]
    ingest = sum(s.seconds for s in stages if s.kind == "ingest")
    derived = sum(s.seconds for s in stages if s.kind == "derived")
    hourly_seconds = sum(s.seconds for s in hourly)
    say(f"floor: {floor_seconds:.2f} s (median of {len(floor_runs)}; {floor_before.pairs:,} customer-product pairs)")
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "scale": scale,
        "spec": asdict(SCALES[scale]),
        "source_rows": {s.asset: s.rows for s in stages if s.kind == "ingest"},
        "generation_seconds": generation_seconds,
        "settings": {
            "memory_limit": memory_limit,
            "threads": threads,
            "duckdb": duckdb.__version__,
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
        "as_of": as_of.isoformat(),
        "paths": {
            "nightly": {
                "stages": [asdict(s) for s in stages],
                "ingest_seconds": ingest,
                "derived_seconds": derived,
                "seconds": ingest + derived,
                "cpu_seconds": sum(s.cpu_seconds for s in stages),
                "peak_rss_bytes": peak,
            },
            "hourly": {
                "hour": hour_key(hour),
                "touched_customers": touched,
                "stages": [asdict(s) for s in hourly],
                "seconds": hourly_seconds,
                "cpu_seconds": sum(s.cpu_seconds for s in hourly),
                "peak_rss_bytes": hourly_peak,
            },
        },
        "floor": {"seconds": floor_seconds, "runs": floor_runs, "pairs": floor_before.pairs},
        "ratios": {
            "derived_over_floor": derived / floor_seconds,
            "nightly_over_floor": (ingest + derived) / floor_seconds,
            "hourly_over_nightly": hourly_seconds / (ingest + derived),
        },
        "process_peak_rss_bytes": max(peak, hourly_peak, lifetime_peak_rss()),
    }


def summary_table(result: dict) -> str:
    """The result as a Markdown table: one row per stage, then the totals and the floor."""
    nightly = result["paths"]["nightly"]
    lines = [
        f"scale {result['scale']}: " + ", ".join(f"{k} {v:,}" for k, v in result["source_rows"].items()),
        "",
        "| stage | kind | rows | seconds | CPU seconds | peak RSS (GiB) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for s in nightly["stages"]:
        lines.append(f"| {s['asset']} | {s['kind']} | {s['rows']:,} | {s['seconds']:.2f} | {s['cpu_seconds']:.2f} | "
                     f"{s['peak_rss_bytes'] / GIB:.2f} |")
    floor = result["floor"]["seconds"]
    lines += [
        f"| **ingest** | | | {nightly['ingest_seconds']:.2f} | | |",
        f"| **nightly rebuild (derived)** | | | {nightly['derived_seconds']:.2f} | | |",
        f"| **whole pipeline** | | | {nightly['seconds']:.2f} | {nightly['cpu_seconds']:.2f} | "
        f"{nightly['peak_rss_bytes'] / GIB:.2f} |",
        f"| **floor** (one aggregation scan) | | {result['floor']['pairs']:,} | {floor:.3f} | | |",
        "",
        f"derived ÷ floor = {result['ratios']['derived_over_floor']:.1f}×, "
        f"whole pipeline ÷ floor = {result['ratios']['nightly_over_floor']:.1f}×",
    ]
    hourly = result["paths"].get("hourly")
    if hourly:
        lines += [
            "",
            f"hourly path, hour {hourly['hour']} ({hourly['touched_customers']:,} customers refreshed):",
            "",
            "| step | kind | rows | seconds | CPU seconds | peak RSS (GiB) |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for s in hourly["stages"]:
            lines.append(f"| {s['asset']} | {s['kind']} | {s['rows']:,} | {s['seconds']:.2f} | "
                         f"{s['cpu_seconds']:.2f} | {s['peak_rss_bytes'] / GIB:.2f} |")
        lines += [
            f"| **hourly path** | | | {hourly['seconds']:.2f} | {hourly['cpu_seconds']:.2f} | "
            f"{hourly['peak_rss_bytes'] / GIB:.2f} |",
            "",
            f"hourly ÷ nightly = {result['ratios']['hourly_over_nightly']:.1%}",
        ]
    return "\n".join(lines)


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
