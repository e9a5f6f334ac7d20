"""Benchmark pictures: time per stage at each scale, and the pipeline over the floor."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SCALE_ORDER = ["xs", "s", "m", "l", "xl"]


def plot_bench(files: list[Path], out_dir: Path) -> list[Path]:
    """`benchmarks.png`: seconds per stage by scale (stacked), derived ÷ floor and peak memory by scale, and the
    hourly path's share of the nightly one."""
    loaded = sorted(((json.loads(f.read_text()), f.stem) for f in files),
                    key=lambda pair: (SCALE_ORDER.index(pair[0]["scale"]), pair[1]))
    if not loaded:
        return []
    results = [r for r, _ in loaded]
    scales = [name for _, name in loaded]  # the file names tell runs of one scale apart
    stages = [s["asset"] for s in results[-1]["paths"]["nightly"]["stages"]]
    fig, (left, right, hourly) = plt.subplots(1, 3, figsize=(18, 6), gridspec_kw={"width_ratios": [3, 2, 2]})
    bottom = [0.0] * len(results)
    colours = plt.get_cmap("tab20")
    for index, stage in enumerate(stages):
        seconds = [next((s["seconds"] for s in r["paths"]["nightly"]["stages"] if s["asset"] == stage), 0.0)
                   for r in results]
        left.bar(scales, seconds, bottom=bottom, label=stage, color=colours(index % 20))
        bottom = [b + s for b, s in zip(bottom, seconds)]
    left.set_ylabel("wall seconds")
    left.set_title("Nightly path: seconds per stage, by run")
    left.legend(fontsize=7, ncol=2, loc="upper left")
    ratios = [r["ratios"]["derived_over_floor"] for r in results]
    peaks = [r["paths"]["nightly"]["peak_rss_bytes"] / 2**30 for r in results]
    right.plot(scales, ratios, marker="o", label="derived stages ÷ floor")
    right.axhline(10, color="grey", linestyle="--", linewidth=1, label="target at l: 10×")
    right.set_yscale("log")
    right.set_ylabel("× floor (log scale)")
    twin = right.twinx()
    twin.plot(scales, peaks, marker="s", color="tab:red", label="peak RSS (GiB)")
    twin.set_ylabel("peak RSS (GiB)")
    right.set_title("Pipeline over the floor, and peak memory")
    handles = right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    labels = right.get_legend_handles_labels()[1] + twin.get_legend_handles_labels()[1]
    right.legend(handles, labels, fontsize=8, loc="upper left")
    shares = [100 * r["ratios"]["hourly_over_nightly"] if "hourly_over_nightly" in r["ratios"] else float("nan")
              for r in results]
    hourly.bar(scales, shares, color="tab:green")
    hourly.axhline(5, color="grey", linestyle="--", linewidth=1, label="target at l: 5 %")
    hourly.set_ylabel("hourly path ÷ nightly path (%)")
    hourly.set_title("The hourly refresh of one hour")
    hourly.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "benchmarks.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
