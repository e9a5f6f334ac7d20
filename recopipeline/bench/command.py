"""`recopipeline bench` and `recopipeline report`: the command-line faces of the benchmarks and the pictures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_bench(args: argparse.Namespace) -> None:
    from recopipeline.bench.run import run_bench, summary_table, write_json
    from recopipeline.lib import settings

    if args.similarity:
        _bench_similarity(args)
        return
    if args.shards:
        _bench_shards(args)
        return
    result = run_bench(
        args.scale,
        Path(args.home) if args.home else settings.LOCAL_HOME,
        memory_limit=args.memory_limit,
        threads=args.threads,
        floor_repeats=args.floor_repeats,
        keep=args.keep,
        progress=lambda line: print(line, flush=True),
    )
    print()
    print(summary_table(result))
    if args.json:
        write_json(result, Path(args.json))
        print(f"\nwrote {args.json}")


def _bench_similarity(args: argparse.Namespace) -> None:
    from recopipeline.bench.run import write_json
    from recopipeline.bench.similarity import time_similarity
    from recopipeline.lib import settings

    result = time_similarity(Path(args.home) if args.home else settings.LOCAL_HOME,
                             memory_limit=args.memory_limit, threads=args.threads)
    print(f"{result['asset']}: {result['products']:,} products in {result['categories']} categories of up to "
          f"{result['largest_category']:,}: {result['rows']:,} rows in {result['seconds']:.2f} s")
    if args.json:
        write_json(result, Path(args.json))
        print(f"wrote {args.json}")


def _bench_shards(args: argparse.Namespace) -> None:
    from recopipeline.bench.run import write_json
    from recopipeline.bench.shards import summary_table, time_shards
    from recopipeline.lib import settings

    result = time_shards(args.scale, Path(args.home) if args.home else settings.LOCAL_HOME, args.shards,
                         args.processes, memory_limit=args.memory_limit, threads=args.threads, keep=args.keep,
                         progress=lambda line: print(line, flush=True))
    print()
    print(summary_table(result))
    if args.json:
        write_json(result, Path(args.json))
        print(f"\nwrote {args.json}")


def cmd_report(args: argparse.Namespace) -> None:
    from recopipeline.bench.plot import plot_bench
    from recopipeline.evaluation.plot import plot_evaluation

    if not args.bench and not args.evaluation:
        raise ValueError("nothing to draw: name result files with --bench and/or --evaluation "
                         "(e.g. recopipeline report --bench docs/benchmarks/bench-*.json)")
    bench = [_result_file(name, "bench", ("scale", "paths")) for name in args.bench]
    evaluation = [_result_file(name, "evaluate", ("rows", "data")) for name in args.evaluation]
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; name a directory")
    for path in [*plot_bench(bench, out), *plot_evaluation(evaluation, out)]:
        print(f"wrote {path}")


def _result_file(name: str, command: str, keys: tuple[str, ...]) -> Path:
    """A readable JSON file written by `recopipeline <command> --json` (it has the given keys)."""
    path = Path(name)
    try:
        result = json.loads(path.read_text())
    except OSError as error:
        raise ValueError(f"{path}: {error.strerror or error}") from None
    except ValueError as error:
        raise ValueError(f"{path} is not JSON: {error}") from None
    missing = [key for key in keys if not isinstance(result, dict) or key not in result]
    if missing:
        raise ValueError(f"{path} is not a result of recopipeline {command} --json (no {', '.join(missing)})")
    return path


def add_commands(commands: argparse._SubParsersAction) -> None:
    from recopipeline.lib import settings

    bench = commands.add_parser("bench", help="time every stage at a synthetic scale against the floor")
    bench.add_argument("--scale", default="xs", choices=["xs", "s", "m", "l", "xl"])
    bench.add_argument("--json", help="also write the result as JSON to this file")
    bench.add_argument("--memory-limit", default=settings.duckdb_memory_limit(),
                       help="DuckDB memory limit per step; beyond it DuckDB spills to disk (default %(default)s)")
    bench.add_argument("--threads", type=int, default=settings.duckdb_threads())
    bench.add_argument("--floor-repeats", type=int, default=3, help="floor runs before and after the pipeline")
    bench.add_argument("--home", help="where data is cached and the scratch warehouse lives "
                                      "(default: RECOPIPELINE_HOME)")
    bench.add_argument("--keep", action="store_true", help="keep the scratch warehouse")
    bench.add_argument("--similarity", action="store_true",
                       help="time only product_similarity, on a wide catalogue: 100,000 products in categories of "
                            "up to 20,000, two brands (--scale is not used)")
    bench.add_argument("--shards", type=int, metavar="N",
                       help="time the derived stages as one run and then over N customer buckets, each bucket's "
                            "phase in a process of its own (lib/shards.py); instead of the nightly and hourly paths")
    bench.add_argument("--processes", type=int, default=2, help="with --shards: processes at a time "
                                                                 "(default %(default)s)")
    bench.set_defaults(func=cmd_bench)

    report = commands.add_parser("report", help="draw the benchmark and evaluation PNGs from their JSON files "
                                 "(at least one file)")
    report.add_argument("--bench", nargs="*", default=[], help="bench JSON files (one per scale)")
    report.add_argument("--evaluation", nargs="*", default=[], help="evaluation JSON files")
    report.add_argument("--out", default="docs/images")
    report.set_defaults(func=cmd_report)
