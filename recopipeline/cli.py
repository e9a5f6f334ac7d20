"""The `recopipeline` command."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from recopipeline.lib import settings
from recopipeline.lib.sources import SourceError
from recopipeline.lib.warehouse import MissingAssetError, Warehouse

JOBS = ("full_rebuild", "hourly_refresh")
EXECUTORS = ("auto", "in_process", "multiprocess")
MAX_LIMIT = 50  # the read API's largest answer


class CommandError(RuntimeError):
    """An error worth one line to the user."""


class OneLineParser(argparse.ArgumentParser):
    """Usage errors are one line on standard error with exit code 2, like every other error."""

    def error(self, message: str):
        print(f"recopipeline: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _warehouse() -> Warehouse:
    return Warehouse(settings.warehouse_root(), settings.duckdb_memory_limit(), settings.duckdb_threads())


def _check_writable(folder: Path, name: str) -> None:
    """Raise a one-line error when `folder` cannot be created or written (read-only, no permission, a file)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise CommandError(f"{name} {folder} is not writable: {error.strerror or error}") from None


def cmd_generate(args: argparse.Namespace) -> None:
    from recopipeline.lib.generator import SCALES, generate

    if args.scale not in SCALES:
        raise CommandError(f"unknown scale {args.scale!r}; choose one of {', '.join(SCALES)}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file; name a directory (it is created if missing)")
    _check_writable(out, "--out")
    started = time.perf_counter()
    counts = generate(args.scale, args.out, seed=args.seed, progress=lambda line: print(line, flush=True))
    total = ", ".join(f"{name} {rows:,}" for name, rows in counts.items())
    print(f"generated scale {args.scale} in {time.perf_counter() - started:.1f} s into {args.out}: {total}")


def cmd_materialize(args: argparse.Namespace) -> None:
    from recopipeline.defs.stage import AS_OF_TAG
    from recopipeline.lib.run_config import load_run_config
    from recopipeline.runner import (
        SHARD_JOBS, check_run_config, check_selection, materialize, partition_tags, planned_executor,
    )

    job = args.job or "full_rebuild"
    if args.shards is not None:  # read when the code location loads, here and in every run's processes
        if not args.shards.isdigit() or int(args.shards) < 1:
            raise CommandError(f"--shards {args.shards!r} is not a whole number of buckets >= 1")
        os.environ["RECOPIPELINE_SHARDS"] = str(int(args.shards))
    try:
        buckets = settings.customer_shards()
    except ValueError as error:
        raise CommandError(str(error)) from None
    if buckets > 1 and job in SHARD_JOBS:  # one phase of the nightly rebuild over buckets, e.g. to rerun a bucket
        return _materialize_phase(args, job, buckets)
    if job not in JOBS:
        known = [*JOBS, *SHARD_JOBS] if buckets > 1 else JOBS
        raise CommandError(f"unknown job {job!r}; choose one of {', '.join(known)}")
    if args.bucket is not None:
        raise CommandError("--bucket names a bucket of the shard jobs (shard_partials, shard_customers)")
    executor = args.executor or "auto"
    if executor not in EXECUTORS:
        raise CommandError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if job == "hourly_refresh" and not args.hour:
        raise CommandError("the hourly_refresh job needs --hour (e.g. 2026-09-30-23:00)")
    selection = [name.strip() for name in args.select.split(",") if name.strip()] if args.select else None
    as_of = settings.parse_as_of(args.as_of) if args.as_of else None
    config_file = args.config or settings.run_config_file()
    run_config = load_run_config(config_file) if config_file else None
    _check_writable(settings.LOCAL_HOME, "RECOPIPELINE_HOME")
    # everything a user can get wrong fails here, on one line, before the run starts
    if selection:
        check_selection(job, selection)
    if args.hour:
        partition_tags(args.hour)
    if run_config:
        try:
            check_run_config(job, run_config)
        except ValueError as error:
            raise CommandError(f"{config_file}: {error}") from None
    planned = planned_executor(job, executor, run_config)
    steps = {None: "steps as the run config's execution section says", "in_process": "steps in this process",
             "multiprocess": "a process per step"}[planned]
    if buckets > 1 and job == "full_rebuild" and not selection:
        steps += f"; {buckets} customer buckets, a process per bucket run"
    print(f"materializing {_describe(job, selection, args.hour, as_of, config_file)} "
          f"(source {settings.source_spec()}, warehouse {settings.warehouse_root()}, {steps})", flush=True)
    started = time.perf_counter()
    summary = materialize(selection, tags={AS_OF_TAG: as_of.isoformat()} if as_of else None, log_level="CRITICAL",
                          job=job, partition=args.hour, run_config=run_config, progress=_print_step,
                          executor=planned or "auto")
    if not summary.success:
        raise CommandError(f"run {summary.run_id} failed: " + "; ".join(summary.failures or ["see the Dagster UI"]))
    print(f"run {summary.run_id} succeeded: {len(summary.materialized)} assets in "
          f"{time.perf_counter() - started:.1f} s", flush=True)


def _materialize_phase(args: argparse.Namespace, job: str, buckets: int) -> None:
    """`materialize --job shard_…`: that phase of the nightly rebuild over buckets, one bucket with --bucket."""
    from recopipeline.defs.stage import AS_OF_TAG
    from recopipeline.runner import PER_BUCKET_JOBS, materialize

    if args.select or args.hour:
        raise CommandError(f"job {job} runs whole phases: --select and --hour do not apply")
    bucket = None
    if args.bucket is not None:
        if job not in PER_BUCKET_JOBS:
            raise CommandError(f"job {job} runs once, not per bucket: --bucket does not apply")
        if not args.bucket.isdigit() or int(args.bucket) >= buckets:
            raise CommandError(f"--bucket {args.bucket!r} is not one of 0 … {buckets - 1}")
        from recopipeline.lib.shards import bucket_key

        bucket = bucket_key(int(args.bucket), buckets)
    as_of = settings.parse_as_of(args.as_of) if args.as_of else None
    which = f"bucket {int(args.bucket)} of {buckets}" if bucket else f"{buckets} buckets"
    print(f"materializing job {job} for {which} (warehouse {settings.warehouse_root()})", flush=True)
    started = time.perf_counter()
    summary = materialize(tags={AS_OF_TAG: as_of.isoformat()} if as_of else None, log_level="CRITICAL", job=job,
                          partition=bucket, progress=_print_step)
    if not summary.success:
        raise CommandError(f"run {summary.run_id} failed: " + "; ".join(summary.failures or ["see the Dagster UI"]))
    print(f"run {summary.run_id} succeeded: {len(summary.materialized)} assets in "
          f"{time.perf_counter() - started:.1f} s", flush=True)


def _describe(job: str, selection: list[str] | None, hour: str | None, as_of, config_file: str | None) -> str:
    """What a materialize run does, for its first line: assets, job, hours, as-of time, run config."""
    what = ", ".join(selection) if selection else "every asset"
    hours = (f"hours {hour}" if "..." in hour else f"hour {hour}") if hour else "every hour that holds source data"
    text = f"{what} of job {job} for {hours}"
    if as_of:
        text += f", as of {as_of.isoformat()}"
    if config_file:
        text += f", with run config {config_file}"
    return text


def _print_step(done) -> None:
    """One line per finished step: its asset, rows and seconds, then what else it wrote (a source's quarantine)."""
    if not done.assets and done.seconds is not None:
        return
    name = done.step if done.step in done.assets else next(iter(done.assets), done.step)
    rows = done.assets.get(name)
    took = f"{done.seconds:6.2f} s" if done.seconds is not None else "failed"
    also = ", ".join(
        f"{_rows(count)} quarantined" if other == "quarantine" else f"{other} {_rows(count)}".strip()
        for other, count in done.assets.items() if other != name
    )
    print(f"  {name:<34} {_rows(rows):>17}  {took}" + (f"  (and {also})" if also else ""), flush=True)


def _rows(count: int | None) -> str:
    return "" if count is None else f"{count:,} row{'' if count == 1 else 's'}"


@contextmanager
def _serving() -> Iterator:
    """The configured serving database; its errors (unreachable, refused) become one line."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from recopipeline.serving import ServingDatabase, ServingError

    url = settings.serving_url()
    try:
        database = ServingDatabase(url, schema=settings.serving_schema())
        try:
            yield database
        finally:
            database.dispose()
    except ServingError as error:
        raise CommandError(str(error)) from None
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        shown = make_url(url).render_as_string(hide_password=True)
        raise CommandError(f"serving database {shown}: {reason}") from None


def cmd_recommend(args: argparse.Namespace) -> None:
    from recopipeline.serving import Recommender

    with _serving() as database:
        answer = Recommender(database, cache_ttl=0).recommend(args.customer_id, limit=args.limit)
    where = f"serving version {answer['version']}, variant {answer['variant']}"
    if answer["cold_start"]:
        print(f"customer {args.customer_id!r} has no recommendations of its own; it is served the cold-start "
              f"list ({where}):")
    else:
        print(f"top {len(answer['recommendations'])} recommendations for customer {args.customer_id} ({where}):")
    table, fills = _recommendation_table(answer)
    print(table)
    if fills:
        print("fill: a popular product of the customer's segment that completes the list; its blend score is "
              "tiny by design (docs/serving.md)")


def _recommendation_table(answer: dict) -> tuple[str, int]:
    """The answer as a table, and how many of its rows are popular fills (shown as `fill`, not as a score)."""
    import pandas as pd

    rows, fills = [], 0
    for item in answer["recommendations"]:
        fill = item["recommendation_type"] == "popular" and not answer["cold_start"]
        fills += fill
        rows.append({"rank": item["rank"], "product_id": item["product_id"], "product_name": item["product_name"],
                     "type": item["recommendation_type"], "score": "fill" if fill else f"{item['score']:.4g}",
                     "evidence": item["evidence"] or ""})
    columns = ["rank", "product_id", "product_name", "type", "score", "evidence"]
    return pd.DataFrame(rows, columns=columns).to_string(index=False), fills


def cmd_sql(args: argparse.Namespace) -> None:
    from recopipeline.lib.readonly_sql import query

    print(query(_warehouse(), args.query).to_string(index=False))


def cmd_demo(args: argparse.Namespace) -> None:
    cmd_materialize(argparse.Namespace(select=None, as_of=None, job=None, hour=None, config=args.config,
                                       executor=None, shards=None, bucket=None))
    customers = _warehouse().read(
        "SELECT customer_id FROM customer_top_recommendations GROUP BY customer_id ORDER BY customer_id LIMIT $n",
        inputs=["customer_top_recommendations"],
        params={"n": args.customers},
    )
    for customer_id in customers["customer_id"]:
        print()
        cmd_recommend(argparse.Namespace(customer_id=customer_id, limit=5))
    print("\nExplore the tables: recopipeline sql \"SELECT * FROM customer_top_recommendations LIMIT 5\"")
    print("Open the Dagster UI: dagster dev   (then http://127.0.0.1:3000)")


def cmd_rollback(args: argparse.Namespace) -> None:
    from recopipeline.serving import rollback

    with _serving() as database:
        before, now = rollback(database)
        shown = database.describe()
    print(f"serving version {now} again; version {before} is rolled back ({shown})")


def cmd_mcp(args: argparse.Namespace) -> None:
    from recopipeline.mcp_server import ConfigurationError, serve

    try:
        serve(args.transport, args.host, args.port, token=settings.mcp_token(), impressions=not args.no_impressions)
    except ConfigurationError as error:
        raise CommandError(str(error)) from None


def _limit(value: str) -> int:
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_LIMIT}, got {value!r}")
    return limit


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="recopipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="write a synthetic data set that follows the contract")
    generate.add_argument("--scale", default="xs", help="xs, s, m, l or xl")
    generate.add_argument("--out", required=True, help="output directory")
    generate.add_argument("--seed", type=int, default=42)
    generate.set_defaults(func=cmd_generate)

    materialize = commands.add_parser("materialize", help="materialize the asset graph on the Dagster instance")
    materialize.add_argument("--select", help="comma-separated asset names (default: every asset)")
    materialize.add_argument("--as-of", help="pin the as-of time (ISO 8601) for this run")
    materialize.add_argument("--job", help="full_rebuild (default) or hourly_refresh")
    materialize.add_argument("--hour", help="the hour to run, e.g. 2026-09-30-23:00, or a range of hours "
                             "2026-09-30-00:00...2026-09-30-23:00 (default: every hour that holds source data)")
    materialize.add_argument("--config", help="YAML run config in the launchpad's shape, e.g. resources: tuning: "
                             "config: {...} (default: RECOPIPELINE_RUN_CONFIG)")
    materialize.add_argument("--executor", help="in_process (steps one after another in this process), "
                             "multiprocess (a process per step, independent steps in parallel) or auto (default: "
                             "in process for the hourly refresh and for sources under 64 MB)")
    materialize.add_argument("--shards", help="customer buckets of the nightly rebuild, each bucket's runs in a "
                             "process of their own (default: RECOPIPELINE_SHARDS, else 1); with buckets, --job "
                             "also takes one phase: shard_partials, shard_item_side, shard_customers, shard_publish")
    materialize.add_argument("--bucket", help="with --job shard_partials or shard_customers: only this bucket")
    materialize.set_defaults(func=cmd_materialize)

    recommend = commands.add_parser("recommend", help="print what the serving database serves a customer")
    recommend.add_argument("customer_id")
    recommend.add_argument("--limit", type=_limit, default=20, help=f"1 to {MAX_LIMIT} (default %(default)s)")
    recommend.set_defaults(func=cmd_recommend)

    sql = commands.add_parser("sql", help="run one read-only query (SELECT) over the warehouse, a view per asset")
    sql.add_argument("query")
    sql.set_defaults(func=cmd_sql)

    demo = commands.add_parser("demo", help="materialize everything and print a few customers' recommendations")
    demo.add_argument("--customers", type=int, default=3)
    demo.add_argument("--config", help="YAML run config, as for materialize")
    demo.set_defaults(func=cmd_demo)

    rollback = commands.add_parser("rollback", help="serve the previous published version again")
    rollback.set_defaults(func=cmd_rollback)

    mcp = commands.add_parser("mcp", help="run the MCP server with the get_product_recommendations tool")
    mcp.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    mcp.add_argument("--host", default="127.0.0.1", help="HTTP: interface to listen on")
    mcp.add_argument("--port", type=int, default=8000, help="HTTP: port (requests need RECOPIPELINE_MCP_TOKEN)")
    mcp.add_argument("--no-impressions", action="store_true", help="do not record answers as impressions")
    mcp.set_defaults(func=cmd_mcp)

    from recopipeline.bench.command import add_commands as add_bench_commands
    from recopipeline.evaluation.command import add_commands as add_evaluation_commands

    add_bench_commands(commands)
    add_evaluation_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error already printed on one line
        return int(stop.code or 0)
    try:
        args.func(args)
    except (CommandError, SourceError, MissingAssetError, ValueError, duckdb.Error, OSError) as error:
        print(f"recopipeline: error: {_one_line(error)}", file=sys.stderr)
        return 2
    return 0


def _one_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
