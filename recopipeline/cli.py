"""The `recopipeline` command."""

from __future__ import annotations

import argparse
import sys
import time

import duckdb

from recopipeline.lib import settings
from recopipeline.lib.sources import SourceError
from recopipeline.lib.warehouse import MissingAssetError, Warehouse


class CommandError(RuntimeError):
    """An error worth one line to the user."""


def _warehouse() -> Warehouse:
    return Warehouse(settings.warehouse_root(), settings.duckdb_memory_limit(), settings.duckdb_threads())


def cmd_generate(args: argparse.Namespace) -> None:
    from recopipeline.lib.generator import SCALES, generate

    if args.scale not in SCALES:
        raise CommandError(f"unknown scale {args.scale!r}; choose one of {', '.join(SCALES)}")
    started = time.perf_counter()
    counts = generate(args.scale, args.out, seed=args.seed, progress=lambda line: print(line, flush=True))
    total = ", ".join(f"{name} {rows:,}" for name, rows in counts.items())
    print(f"generated scale {args.scale} in {time.perf_counter() - started:.1f} s into {args.out}: {total}")


def cmd_materialize(args: argparse.Namespace) -> None:
    from recopipeline.defs.stage import AS_OF_TAG
    from recopipeline.runner import materialize

    selection = [name.strip() for name in args.select.split(",")] if args.select else None
    tags = {AS_OF_TAG: settings.parse_as_of(args.as_of).isoformat()} if args.as_of else None
    print(f"materializing {'the whole graph' if not selection else ', '.join(selection)} "
          f"(source {settings.source_spec()}, warehouse {settings.warehouse_root()})", flush=True)
    job, hour = getattr(args, "job", None) or "full_rebuild", getattr(args, "hour", None)
    if job == "hourly_refresh" and not hour:
        raise CommandError("the hourly_refresh job needs --hour (e.g. 2026-09-30-23:00)")
    summary = materialize(selection, tags=tags, log_level="WARNING", job=job, partition=hour)
    for asset, rows in summary.materialized.items():
        seconds = summary.seconds.get(asset)
        print(f"  {asset:<34} {rows if rows is not None else '-':>12,} rows  {seconds or 0:6.2f} s")
    if not summary.success:
        raise CommandError(f"run {summary.run_id} failed: " + "; ".join(summary.failures or ["see the Dagster UI"]))
    print(f"run {summary.run_id} succeeded: {len(summary.materialized)} assets")


def cmd_recommend(args: argparse.Namespace) -> None:
    frame = _warehouse().read(
        "SELECT recommendation_rank AS rank, product_id, product_name, recommendation_type AS type, "
        "round(recommendation_score, 4) AS score, evidence FROM customer_top_recommendations "
        "WHERE customer_id = $customer ORDER BY recommendation_rank LIMIT $limit",
        inputs=["customer_top_recommendations"],
        params={"customer": args.customer_id, "limit": args.limit},
    )
    if frame.empty:
        raise CommandError(f"no recommendations for customer {args.customer_id!r}")
    print(f"top {len(frame)} recommendations for customer {args.customer_id}:")
    print(frame.to_string(index=False))


def cmd_sql(args: argparse.Namespace) -> None:
    print(_warehouse().query_catalog(args.query).to_string(index=False))


def cmd_demo(args: argparse.Namespace) -> None:
    cmd_materialize(argparse.Namespace(select=None, as_of=None))
    store = _warehouse()
    customers = store.read(
        "SELECT customer_id FROM customer_top_recommendations GROUP BY customer_id ORDER BY customer_id LIMIT $n",
        inputs=["customer_top_recommendations"],
        params={"n": args.customers},
    )
    for customer_id in customers["customer_id"]:
        print()
        cmd_recommend(argparse.Namespace(customer_id=customer_id, limit=5))
    print(f"\nExplore the tables: recopipeline sql \"SELECT * FROM customer_top_recommendations LIMIT 5\"")
    print("Open the Dagster UI: dagster dev   (then http://127.0.0.1:3000)")


def cmd_rollback(args: argparse.Namespace) -> None:
    from recopipeline.serving import ServingDatabase, ServingError, rollback

    try:
        database = ServingDatabase(settings.serving_url(), schema=settings.serving_schema())
        before, now = rollback(database)
    except ServingError as error:
        raise CommandError(str(error)) from None
    print(f"serving version {now} again; version {before} is rolled back ({database.describe()})")


def cmd_mcp(args: argparse.Namespace) -> None:
    from recopipeline.mcp_server import ConfigurationError, serve

    try:
        serve(args.transport, args.host, args.port, token=settings.mcp_token(), impressions=not args.no_impressions)
    except ConfigurationError as error:
        raise CommandError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recopipeline", description=__doc__)
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
    materialize.set_defaults(func=cmd_materialize)

    recommend = commands.add_parser("recommend", help="print a customer's top recommendations")
    recommend.add_argument("customer_id")
    recommend.add_argument("--limit", type=int, default=20)
    recommend.set_defaults(func=cmd_recommend)

    sql = commands.add_parser("sql", help="run a query against the warehouse catalog")
    sql.add_argument("query")
    sql.set_defaults(func=cmd_sql)

    demo = commands.add_parser("demo", help="materialize everything and print a few customers' recommendations")
    demo.add_argument("--customers", type=int, default=3)
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
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CommandError, SourceError, MissingAssetError, ValueError, duckdb.Error) as error:
        print(f"recopipeline: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
