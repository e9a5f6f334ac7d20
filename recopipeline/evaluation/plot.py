"""Evaluation pictures: NDCG@20 and recall@20 of every method, per variant."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from recopipeline.evaluation.split import VARIANTS  # noqa: E402

GROUP_COLOURS = {"baseline": "tab:grey", "pipeline": "tab:blue", "diversity": "tab:green", "trending": "tab:purple",
                 "learned": "tab:red", "ablation": "tab:orange"}


def plot_evaluation(files: list[Path], out_dir: Path) -> list[Path]:
    """`evaluation-<data>.png` per result file: a bar chart per variant."""
    paths = []
    for file in files:
        result = json.loads(file.read_text())
        fig, axes = plt.subplots(1, len(VARIANTS), figsize=(14, 6))
        for ax, variant in zip(axes, VARIANTS):
            rows = [r for r in result["rows"] if r["variant"] == variant]
            names = [r["method"] for r in rows]
            ys = range(len(rows))
            ax.barh([y + 0.2 for y in ys], [r["ndcg@20"] for r in rows], height=0.4,
                    color=[GROUP_COLOURS.get(r["group"], "tab:green") for r in rows], label="NDCG@20")
            ax.barh([y - 0.2 for y in ys], [r["recall@20"] for r in rows], height=0.4, color="lightsteelblue",
                    label="recall@20")
            ax.set_yticks(list(ys), names, fontsize=8)
            ax.invert_yaxis()
            ax.set_title(f"{variant} (test customers: {result['test_customers'][variant]:,})")
            ax.legend(fontsize=8, loc="lower right")
        name = Path(result["data"]).stem
        fig.suptitle(f"Offline evaluation on {name}, cut {result['cut'][:10]} "
                     "(grey: baselines, blue: pipeline, green: diversity caps, purple: trending blended in, "
                     "red: the learned ranking, orange: one strategy alone)")
        fig.tight_layout()
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"evaluation-{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
