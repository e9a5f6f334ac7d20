"""The temporal split: train on the orders before the cut, test on each customer's purchases after it.

Only customers with purchases on both sides of the cut are tested (the pipeline knows nothing of the others).
Two kinds of truth per test customer:

- discovery: the products bought after the cut that the customer had not bought before it;
- repeat: every product bought after the cut.

A customer whose discovery truth is empty (they only re-bought) is left out of the discovery scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from recopipeline.lib.online_retail import convert_online_retail

DISCOVERY = "discovery"
REPEAT = "repeat"
VARIANTS = (DISCOVERY, REPEAT)


@dataclass(frozen=True)
class Truth:
    """What each test customer bought after the cut, per evaluation variant."""

    discovery: dict[str, set[str]]
    repeat: dict[str, set[str]]

    def of(self, variant: str) -> dict[str, set[str]]:
        return {DISCOVERY: self.discovery, REPEAT: self.repeat}[variant]


def ground_truth(before: pd.DataFrame, after: pd.DataFrame) -> Truth:
    """Truth sets from (customer_id, product_id) purchases before and after the cut."""
    history: dict[str, set[str]] = {}
    for customer, product in zip(before.customer_id, before.product_id):
        history.setdefault(customer, set()).add(product)
    repeat: dict[str, set[str]] = {}
    for customer, product in zip(after.customer_id, after.product_id):
        if customer in history:
            repeat.setdefault(customer, set()).add(product)
    discovery = {c: new for c, bought in repeat.items() if (new := bought - history[c])}
    return Truth(discovery=dict(sorted(discovery.items())), repeat=dict(sorted(repeat.items())))


@dataclass(frozen=True)
class TemporalSplit:
    cut: datetime
    train_dir: Path  # the five contract sources of the training period
    test_dir: Path  # the same for the test period
    truth: Truth

    def train_orders(self) -> pd.DataFrame:
        return _read(self.train_dir / "orders.parquet")


def prepare_split(raw: Path, cut: datetime, work_dir: Path, test_end: datetime | None = None) -> TemporalSplit:
    """Convert the raw UCI file into a training and a test set of contract sources around `cut` (cached).

    The test period runs from the cut to `test_end` (default: the end of the data).
    """
    if not raw.exists():
        raise FileNotFoundError(f"Online Retail file not found: {raw}")
    end = f"-to{test_end:%Y%m%d}" if test_end else ""
    folder = work_dir / f"{raw.stem}-cut{cut:%Y%m%d%H%M}{end}"
    train, test = folder / "train", folder / "test"
    test_bounds = {"start": cut.isoformat(), "end": test_end.isoformat() if test_end else None}
    for target, bounds in ((train, {"end": cut.isoformat()}), (test, test_bounds)):
        if not (target / "_SUCCESS").exists():
            convert_online_retail(raw, target, **bounds)
            (target / "_SUCCESS").touch()
    truth = ground_truth(_read(train / "orders.parquet"), _read(test / "orders.parquet"))
    if not truth.repeat:
        raise ValueError(f"no customer of {raw.name} bought both before and after {cut:%Y-%m-%d}")
    return TemporalSplit(cut=cut, train_dir=train, test_dir=test, truth=truth)


def _read(path: Path) -> pd.DataFrame:
    con = duckdb.connect()
    try:
        return con.execute(
            "SELECT customer_id, product_id, order_id, order_timestamp, quantity FROM read_parquet(?)", [str(path)]
        ).df()
    finally:
        con.close()
