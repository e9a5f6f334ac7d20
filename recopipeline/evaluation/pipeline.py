"""The pipeline trained on the split's training sources, re-run per configuration only where it changes.

The training warehouse is built once with the pipeline's own stages (as of the cut). A configuration that
differs from the last one only re-runs the stages that read a changed tuning value, and everything downstream
(`lib/stages.stages_to_rerun`).
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from recopipeline.bench.pipeline import ingest_source
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.stages import run_stage, stage_order, stages_to_rerun
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse


class TrainedPipeline:
    """A scratch warehouse over the training sources; `top_lists` gives each customer's ranked products."""

    def __init__(self, train_dir: Path, root: Path, as_of: datetime, memory_limit: str = "2GB", threads: int = 2):
        shutil.rmtree(root, ignore_errors=True)
        self.store = Warehouse(root=str(root), memory_limit=memory_limit, threads=threads)
        self.as_of = as_of
        self.built_with: Tuning | None = None
        for source in SOURCES:
            ingest_source(self.store, train_dir, source)

    def build(self, tuning: Tuning) -> list[str]:
        """Bring the warehouse to `tuning`; returns the stages that ran."""
        names = stages_to_rerun(self.built_with, tuning)
        for stage in stage_order():
            if stage.name in names:
                run_stage(self.store, stage, tuning, self.as_of)
        self.built_with = tuning
        return names

    def top_lists(self, tuning: Tuning) -> dict[str, list[str]]:
        self.build(tuning)
        frame = self.store.read(
            "SELECT customer_id, product_id FROM customer_top_recommendations ORDER BY customer_id, recommendation_rank",
            inputs=["customer_top_recommendations"],
        )
        return {c: group.product_id.tolist() for c, group in frame.groupby("customer_id", sort=False)}

    def model_promoted(self) -> bool:
        """Whether the last built ranking_model was promoted (the learned ranking then ranks the lists)."""
        frame = self.store.read("SELECT promoted FROM ranking_model", inputs=["ranking_model"])
        return bool(frame.promoted.iloc[0])

    def catalogue_size(self) -> int:
        frame = self.store.read(
            "SELECT count(*) AS n FROM products WHERE is_active AND (stock_quantity > 0 OR stock_quantity IS NULL)",
            inputs=["products"],
        )
        return int(frame.n.iloc[0])
