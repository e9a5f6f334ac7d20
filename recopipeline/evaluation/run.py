"""One evaluation run: split, baselines, the pipeline in several configurations, EASE; metrics per method."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from recopipeline.evaluation.baselines import baseline_lists
from recopipeline.evaluation.metrics import paired_bootstrap, score_lists
from recopipeline.evaluation.pipeline import TrainedPipeline
from recopipeline.evaluation.split import DISCOVERY, REPEAT, VARIANTS, prepare_split
from recopipeline.lib.tuning import STRATEGIES, Tuning

Progress = Callable[[str], None]
K = 20
DEFAULT_CUT = datetime(2011, 10, 1)

# The tutorial's blend: affinity-similar x1, collaborative x0.8, complementary x1, category x0.6, no fallback.
TUTORIAL_WEIGHTS = {
    "weight_affinity_similar": 1.0, "weight_collaborative": 0.8, "weight_complementary": 1.0,
    "weight_category_preference": 0.6, "weight_repurchase": 0.0, "weight_popular": 0.0, "weight_ease": 0.0,
}
# The configuration for shops where customers re-order (the winner of the repeat variant on a validation
# split): purchased products may come back, "buy it again" leads, EASE and popularity fill.
REPEAT_SETTINGS = {
    "exclude_purchased": False, "weight_affinity_similar": 0.0, "weight_collaborative": 0.0,
    "weight_complementary": 0.0, "weight_category_preference": 0.0,
    "weight_repurchase": 1.0, "weight_ease": 0.2, "weight_popular": 0.02,
}


def only(strategy: str, base: Tuning) -> Tuning:
    """`base` with every blend weight 0 but one strategy's."""
    weights = {f"weight_{s}": (1.0 if s == strategy else 0.0) for s in STRATEGIES}
    return replace(base, **weights)


DIVERSITY_CAPS = (2, 5)
# weight_trending of the `with_trending_<w>` configurations: a small and a large share of the discovery blend's total
# weight (13.7) and of the repeat configuration's (1.22)
TRENDING_WEIGHTS = (0.05, 0.5, 2.0, 5.0)


def pipeline_configurations(default: Tuning) -> dict[str, list[tuple[str, str, Tuning]]]:
    """(method, group, tuning) per variant: the default, the tutorial blend, diversity caps, the trending strategy
    blended in and each strategy alone."""
    discovery_base = replace(default, exclude_purchased=True, weight_repurchase=0.0)
    repeat_base = replace(default, **REPEAT_SETTINGS)
    configs = {
        DISCOVERY: [
            ("pipeline_default", "pipeline", discovery_base),
            ("tutorial_blend", "baseline", replace(discovery_base, **TUTORIAL_WEIGHTS)),
        ],
        REPEAT: [
            ("pipeline_repeat", "pipeline", repeat_base),
            ("tutorial_blend", "baseline", replace(repeat_base, exclude_purchased=True, **TUTORIAL_WEIGHTS)),
        ],
    }
    for cap in DIVERSITY_CAPS:  # the top N with at most `cap` products of a category (the rest after)
        configs[DISCOVERY].append((f"category_cap_{cap}", "diversity", replace(discovery_base, diversity_max_per_category=cap)))
        configs[REPEAT].append((f"category_cap_{cap}", "diversity", replace(repeat_base, diversity_max_per_category=cap)))
    for variant, base in ((DISCOVERY, discovery_base), (REPEAT, repeat_base)):  # the learned ranking, if promoted
        configs[variant].append(("learned_ranking", "learned", replace(base, learned_ranking=True)))
    for weight in TRENDING_WEIGHTS:  # the trending list (product_trending as of the cut) blended in
        for variant, base in ((DISCOVERY, discovery_base), (REPEAT, repeat_base)):
            configs[variant].append((f"with_trending_{weight:g}", "trending", replace(base, weight_trending=weight)))
    for strategy in STRATEGIES:
        if strategy != "repurchase":
            configs[DISCOVERY].append((f"only_{strategy}", "ablation", only(strategy, discovery_base)))
        configs[REPEAT].append((f"only_{strategy}", "ablation", only(strategy, repeat_base)))
    return configs


def evaluate(
    raw: Path,
    home: Path,
    cut: datetime = DEFAULT_CUT,
    tuning: Tuning | None = None,
    progress: Progress | None = None,
) -> dict:
    """Score every method on both variants; returns a JSON-ready dict with one row per (variant, method)."""
    say = progress or (lambda _line: None)
    default = replace(tuning or Tuning(), top_n=K)
    began = time.perf_counter()
    split = prepare_split(raw, cut, home / "evaluation" / "splits")
    orders = split.train_orders()
    say(f"split at {cut:%Y-%m-%d}: {len(orders):,} training order lines; test customers: "
        f"{len(split.truth.repeat):,} (repeat), {len(split.truth.discovery):,} (discovery)")

    pipeline = TrainedPipeline(split.train_dir, home / "evaluation" / "warehouse", as_of=cut)
    catalogue = pipeline.catalogue_size()
    rows: list[dict] = []

    shown: dict[tuple[str, str], dict[str, list[str]]] = {}

    def record(variant: str, method: str, group: str, lists: dict[str, list[str]], seconds: float) -> None:
        metrics = score_lists(lists, split.truth.of(variant), catalogue)
        if group == "pipeline":
            shown[variant, "pipeline"] = lists
        elif group == "learned":  # its gain over the hand-set blend, customers resampled
            gain, low, high = paired_bootstrap(shown[variant, "pipeline"], lists, split.truth.of(variant), K)
            metrics |= {"ndcg@20_gain": gain, "ndcg@20_gain_low": low, "ndcg@20_gain_high": high,
                        "promoted": float(pipeline.model_promoted())}
        rows.append({"variant": variant, "method": method, "group": group, "seconds": round(seconds, 3), **metrics})
        say(f"  {variant:<9} {method:<28} ndcg@20 {metrics['ndcg@20']:.4f}  recall@20 {metrics['recall@20']:.4f}  "
            f"hit@20 {metrics['hit_rate@20']:.3f}  served {metrics['served']:.3f}  {seconds:6.2f} s")

    for variant in VARIANTS:
        customers = list(split.truth.of(variant))
        started = time.perf_counter()
        for method, lists in baseline_lists(orders, customers, cut, K, exclude_own=variant == DISCOVERY).items():
            record(variant, method, "baseline", lists, time.perf_counter() - started)
            started = time.perf_counter()
        for method, group, config in pipeline_configurations(default)[variant]:
            started = time.perf_counter()
            record(variant, method, group, pipeline.top_lists(config), time.perf_counter() - started)

    return {
        "data": str(raw),
        "cut": cut.isoformat(),
        "k": K,
        "catalogue_size": catalogue,
        "test_customers": {v: len(split.truth.of(v)) for v in VARIANTS},
        "seconds": round(time.perf_counter() - began, 2),
        "rows": rows,
    }


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
