"""One benchmark run: data for a scale, the nightly path stage by stage, and the floor, as a JSON-ready dict."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from recopipeline.bench.floor import measure_floor
from recopipeline.bench.memory import RssSampler, lifetime_peak_rss
from recopipeline.bench.pipeline import ingest_source, run_stage, stage_order
from recopipeline.defs.stage import latest_event_time
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.generator import SCALES
from recopipeline.lib.sources import resolve_location
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse

GIB = 2**30
Progress = Callable[[str], None]


@dataclass
class StageTiming:
    asset: str
    kind: str  # "ingest" (a source copied into the warehouse) or "derived" (a SQL stage)
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
    """Benchmark the nightly path at `scale`; data is cached under `home/input`, the warehouse is scratch."""
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

    stages: list[StageTiming] = []
    with RssSampler() as sampler:
        say("ingest:")
        for source in SOURCES:
            stages.append(_timed(sampler, source, "ingest", lambda s=source: ingest_source(store, location, s), say))
        as_of = latest_event_time(store)
        floor_before = measure_floor(store, tuning, as_of, repeats=floor_repeats)
        say(f"nightly rebuild (as of {as_of.isoformat()}):")
        for stage in stage_order():
            stages.append(_timed(sampler, stage.name, "derived", lambda s=stage: run_stage(store, s, tuning, as_of), say))
        floor_after = measure_floor(store, tuning, as_of, repeats=floor_repeats)
        peak = max(sampler.peak(), max(s.peak_rss_bytes for s in stages))

    floor_runs = sorted(floor_before.runs + floor_after.runs)
    floor_seconds = floor_runs[len(floor_runs) // 2]
    ingest = sum(s.seconds for s in stages if s.kind == "ingest")
    derived = sum(s.seconds for s in stages if s.kind == "derived")
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
        },
        "floor": {"seconds": floor_seconds, "runs": floor_runs, "pairs": floor_before.pairs},
        "ratios": {
            "derived_over_floor": derived / floor_seconds,
            "nightly_over_floor": (ingest + derived) / floor_seconds,
        },
        "process_peak_rss_bytes": max(peak, lifetime_peak_rss()),
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
    return "\n".join(lines)


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
