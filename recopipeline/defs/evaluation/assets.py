"""The offline evaluation as an asset: metrics as numeric metadata, so the UI plots them across runs.

It reads only its own inputs (the raw Online Retail file) and builds its own scratch warehouse, so it is not
part of the nightly rebuild; materialize it on demand or from its own schedule.
"""

from pathlib import Path

import dagster as dg

from recopipeline.defs.resources import TuningResource
from recopipeline.defs.stage import OWNERS, code_references
from recopipeline.evaluation import run as run_module
from recopipeline.evaluation.report import REFERENCE, lift, markdown_report
from recopipeline.evaluation.run import evaluate
from recopipeline.lib import settings
from recopipeline.lib.online_retail import SAMPLE_PATH

GROUP = "evaluation"
HEADLINE_METRICS = ("ndcg@10", "ndcg@20", "precision@20", "recall@20", "map@20", "hit_rate@20", "coverage@20", "served")


class EvaluationConfig(dg.Config):
    data: str = ""  # the raw UCI Online Retail Parquet file; empty = the bundled sample
    cut: str = "2011-10-01"  # train before, test after
    home: str = ""  # where the split and the scratch warehouse live; empty = RECOPIPELINE_HOME


def evaluation_metadata(result: dict) -> dict:
    """Numeric metadata: headline metrics of the pipeline and baselines, NDCG@20 of every ablation, the lifts."""
    metadata: dict = {}
    for row in result["rows"]:
        prefix = f"{row['variant']}/{row['method']}"
        keys = HEADLINE_METRICS if row["group"] != "ablation" else ("ndcg@20",)
        for key in keys:
            metadata[f"{prefix}/{key}"] = dg.MetadataValue.float(round(row[key], 6))
        if row["group"] == "pipeline":
            ratio = lift(result, row["variant"], row["method"])
            if ratio is not None:
                reference = REFERENCE[row["variant"]]
                metadata[f"{prefix}/ndcg@20_over_{reference}"] = dg.MetadataValue.float(round(ratio, 4))
    for variant, count in result["test_customers"].items():
        metadata[f"{variant}/test_customers"] = dg.MetadataValue.int(count)
    return metadata


@dg.asset(
    name="offline_evaluation",
    group_name=GROUP,
    kinds={"duckdb", "python"},
    owners=OWNERS,
    metadata=code_references(run_module.__file__, __file__),
    description=(
        "Temporal split of the Online Retail data (train before the cut, test after): NDCG, precision, recall, "
        "MAP, hit rate, coverage and served share at 10/20 for the pipeline, baselines and each strategy alone. "
        "See docs/evaluation.md."
    ),
)
def offline_evaluation(
    context: dg.AssetExecutionContext, config: EvaluationConfig, tuning: TuningResource
) -> dg.MaterializeResult:
    raw = Path(config.data) if config.data else SAMPLE_PATH
    if not raw.exists():
        raise dg.Failure(description=f"Online Retail file not found: {raw}")
    result = evaluate(raw, Path(config.home) if config.home else settings.LOCAL_HOME, cut=settings.parse_as_of(config.cut), tuning=tuning.get(),
                      progress=context.log.info)
    return dg.MaterializeResult(
        metadata={
            **evaluation_metadata(result),
            "report": dg.MetadataValue.md(markdown_report(result)),
            "data": dg.MetadataValue.path(str(raw)),
            "cut": dg.MetadataValue.text(result["cut"]),
            "evaluation_seconds": dg.MetadataValue.float(result["seconds"]),
        }
    )
