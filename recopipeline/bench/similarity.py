"""Attribute similarity on a wide catalogue: many products in few, large categories, two brands, repeated prices.

The shape of a grocery chain's catalogue, where a pair join within categories grows with the square of a
category's size. `time_similarity` runs `product_similarity` over such a catalogue exactly as its asset does.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from recopipeline.lib.contract import arrow_schema
from recopipeline.lib.stages import run_stage, stage
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse

ASSET = "product_similarity"
SHELF_PRICES = (0.29, 0.49, 0.79, 0.99)  # price endings: most products share a price with many others
UNKNOWN_BRAND_SHARE = 0.03
UNKNOWN_PRICE_SHARE = 0.02


def category_sizes(products: int, largest: int) -> list[int]:
    """Sizes that add up to `products`: the largest first, each next one 0.7 times the one before (at least 1,000
    or `largest`)."""
    sizes, left, size = [], products, largest
    while left > 0:
        sizes.append(min(size, left))
        left -= sizes[-1]
        size = max(min(1_000, largest), int(size * 0.7))
    return sizes


def wide_catalogue(
    products: int = 100_000, largest_category: int = 20_000, brands: int = 2, seed: int = 42
) -> pa.Table:
    """A contract-shaped `products` table: categories of up to `largest_category` products, `brands` brands per
    category (a few unknown), a few hundred distinct prices (a few unknown)."""
    rng = np.random.default_rng(seed)
    sizes = category_sizes(products, largest_category)
    category = np.repeat(np.arange(len(sizes)), sizes)
    brand = rng.integers(0, brands, products)
    price = np.floor(np.exp(rng.normal(1.2, 0.7, products))) + rng.choice(SHELF_PRICES, products)
    known_brand = rng.random(products) >= UNKNOWN_BRAND_SHARE
    known_price = rng.random(products) >= UNKNOWN_PRICE_SHARE
    ids = [f"G{i:07d}" for i in rng.permutation(products)]
    columns = {
        "product_id": ids,
        "product_name": ids,
        "category": [f"Aisle {c + 1}" for c in category],
        "brand": [f"Brand {b + 1}" if ok else None for b, ok in zip(brand, known_brand)],
        "price": pa.array(np.round(price, 2), mask=~known_price),
        "stock_quantity": pa.array(np.full(products, 10, dtype=np.int32)),
        "is_active": pa.array(np.ones(products, dtype=bool)),
        "created_at": pa.array(np.full(products, np.datetime64("2026-01-01", "us"))),
    }
    return pa.table(columns, schema=arrow_schema("products"))


def time_similarity(
    home: Path,
    *,
    products: int = 100_000,
    largest_category: int = 20_000,
    tuning: Tuning | None = None,
    memory_limit: str = "3GB",
    threads: int = 2,
    seed: int = 42,
) -> dict:
    """Write a wide catalogue to a scratch warehouse under `home` and time `product_similarity` over it."""
    tuning = tuning or Tuning()
    root = home / "bench" / "similarity" / "warehouse"
    shutil.rmtree(root, ignore_errors=True)
    store = Warehouse(root=str(root), memory_limit=memory_limit, threads=threads,
                      temp_directory=str(home / "bench" / "spill"))
    catalogue = wide_catalogue(products, largest_category, seed=seed)
    with store.session() as con:
        con.register("catalogue", catalogue)
        # keyed in id order, as a first ingest numbers them (lib/keys.py)
        store.write(con, "products", "SELECT *, (row_number() OVER (ORDER BY product_id))::INTEGER AS product_key "
                    "FROM catalogue", order_by="product_id")
    started = time.perf_counter()
    rows = run_stage(store, stage(ASSET), tuning, datetime(2026, 1, 1))
    seconds = time.perf_counter() - started
    shutil.rmtree(root, ignore_errors=True)
    return {
        "asset": ASSET,
        "products": products,
        "largest_category": largest_category,
        "categories": len(category_sizes(products, largest_category)),
        "rows": rows,
        "seconds": seconds,
        "settings": {"memory_limit": memory_limit, "threads": threads, "similarity_top_k": tuning.similarity_top_k},
    }
