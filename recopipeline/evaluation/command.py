"""`recopipeline evaluate`: the offline evaluation from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_evaluate(args: argparse.Namespace) -> None:
    from recopipeline.evaluation.report import markdown_report
    from recopipeline.evaluation.run import evaluate, write_json
    from recopipeline.lib import settings
    from recopipeline.lib.online_retail import SAMPLE_PATH

    raw = Path(args.data) if args.data else SAMPLE_PATH
    if not raw.exists():
        raise ValueError(f"Online Retail file not found: {raw}")
    result = evaluate(
        raw,
        Path(args.home) if args.home else settings.LOCAL_HOME,
        cut=settings.parse_as_of(args.cut),
        progress=lambda line: print(line, flush=True),
    )
    print()
    print(markdown_report(result))
    if args.json:
        write_json(result, Path(args.json))
        print(f"\nwrote {args.json}")


def add_commands(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="offline evaluation on real data: temporal split, baselines, metrics at 10 and 20"
    )
    evaluate.add_argument("--cut", default="2011-10-01", help="train before, test after (default %(default)s)")
    evaluate.add_argument("--data", help="the raw UCI Online Retail Parquet file (default: the bundled sample)")
    evaluate.add_argument("--json", help="also write the result as JSON to this file")
    evaluate.add_argument("--home", help="where splits and the scratch warehouse live (default: RECOPIPELINE_HOME)")
    evaluate.set_defaults(func=cmd_evaluate)
