"""Shared fixtures: a temporary warehouse, hand-made upstream tables and single-stage materializations."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from recopipeline.defs.resources import (  # noqa: E402
    ServingResource,
    SourceResource,
    TuningResource,
    WarehouseResource,
)
from recopipeline.defs.stage import AS_OF_TAG  # noqa: E402
from recopipeline.definitions import defs as load_defs  # noqa: E402
from recopipeline.lib.contract import SOURCES  # noqa: E402
from recopipeline.lib.keys import (  # noqa: E402
    BY_ID,
    dictionary_relations,
    extend_dictionary,
    key_columns,
    keyed_rows,
    readable_query,
)
from recopipeline.lib.warehouse import Warehouse  # noqa: E402

AS_OF = datetime(2026, 10, 1)


CHROMIUM = Path("/usr/bin/chromium")  # Debian's; the UI tests drive it through Playwright


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A UI test without Chromium skips with the reason, except in CI (CI=true), where it fails."""
    if item.get_closest_marker("ui") is None or CHROMIUM.exists():
        return
    missing = f"the UI tests need Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{missing}; in CI they must run, not skip", pytrace=False)
    pytest.skip(missing)


@pytest.fixture(scope="session")
def definitions() -> dg.Definitions:
    return load_defs()


@pytest.fixture(scope="session")
def nightly(definitions: dg.Definitions, tmp_path_factory: pytest.TempPathFactory):
    """The session's nightly rebuild of synthetic xs data (nightly_base.py): read it, or copy it to change it."""
    from recopipeline_tests.nightly_base import build_nightly_base

    return build_nightly_base(definitions, tmp_path_factory.getbasetemp() / "nightly_base")


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(root=str(tmp_path / "warehouse"), memory_limit="1GB", threads=2)


def resources_for(store: Warehouse, source: str = "synthetic:xs", cache_dir: str | None = None, **tuning) -> dict:
    return {
        "warehouse": WarehouseResource(root=store.root, memory_limit=store.memory_limit, threads=store.threads),
        "source": SourceResource(source=source, cache_dir=cache_dir or str(Path(store.root).parent / "input")),
        "tuning": TuningResource(**tuning),
        # a serving database per warehouse, next to it
        "serving": ServingResource(url=f"sqlite:///{store.root.rstrip('/')}-serving.db"),
    }


BY_ID_TABLES = ("customer_top_recommendations", "customer_placement_recommendations")  # derived tables that name customers and products by id


def put(store: Warehouse, asset: str, frame: pd.DataFrame) -> None:
    """Write a hand-made table as if its asset had been materialized.

    A source gets its integer keys as its ingest gives them (the dictionaries first grow by the ids it names, so
    an event source may come before its customers and products); a derived table written with ids gets the keys
    of those ids instead.
    """
    with store.session() as con:
        con.register("frame", frame)
        query = "SELECT * FROM frame"
        source = asset in SOURCES and not set(key_columns(SOURCES[asset])) & set(frame.columns)
        if source or (asset not in SOURCES and asset not in BY_ID_TABLES):
            for column in frame.columns:
                base = _id_of(column)
                if base is not None:
                    extend_dictionary(store, con, BY_ID[base], f"(SELECT {column} AS {base} FROM frame)")
            query = keyed_rows(store, con, SOURCES[asset], query) if source else _with_keys(store, frame)
        store.write(con, asset, query)
    if asset == "product_recommendations":  # without a promoted model the learned stage passes them through
        unranked(store)


def unranked(store: Warehouse) -> None:
    """learned_recommendations as the learned stage writes it with the learned ranking off: no rows."""
    with store.session(["product_recommendations"]) as con:
        store.write(con, "learned_recommendations", "SELECT customer_key, product_key, recommendation_rank, "
                    "recommendation_score FROM product_recommendations WHERE false")


def _id_of(column: str) -> str | None:
    """`customer_id` for customer_id, `product_id` for product_id_2; None for a column that names no id."""
    return next((ident for ident in BY_ID if column == ident or column.startswith(f"{ident}_")), None)


def _with_keys(store: Warehouse, frame: pd.DataFrame) -> str:
    """SQL for a hand-made derived table with every `customer_id` / `product_id_2` … replaced by its key."""
    selected, joins = [], []
    for column in frame.columns:
        base = _id_of(column)
        if base is None:
            selected.append(f"f.{column}")
            continue
        dictionary = BY_ID[base]
        alias = f"d{len(joins)}"
        joins.append(f"LEFT JOIN {store.scan(dictionary.table)} AS {alias} ON {alias}.{base} = f.{column}")
        selected.append(f"{alias}.{dictionary.key_column} AS {column.replace(base, dictionary.key_column)}")
    return f"SELECT {', '.join(selected)} FROM frame AS f {' '.join(joins)}"


def stage(
    definitions: dg.Definitions,
    store: Warehouse,
    assets: Iterable[str],
    as_of: datetime = AS_OF,
    **tuning,
) -> dg.ExecuteInProcessResult:
    """Materialize the named assets only, over upstream tables already in the warehouse."""
    names = list(assets)
    result = dg.materialize(
        list(definitions.assets),
        selection=names,
        resources=resources_for(store, **tuning),
        tags={AS_OF_TAG: as_of.isoformat()},
    )
    assert result.success
    return result


def table(store: Warehouse, asset: str, order_by: str) -> pd.DataFrame:
    """The asset's rows as the catalog shows them (ids next to the keys), in `order_by` order."""
    with store.session([asset]) as con:
        readable = readable_query(con, f"SELECT * FROM {asset}", dictionary_relations(store))
        return con.sql(f"SELECT * FROM ({readable}) ORDER BY {order_by}").df()


NOT_NIGHTLY = ("incremental", "evaluation")


def materialize_assets(
    assets: list, selection=None, *, resources: dict, tags: dict[str, str] | None = None, **kwargs
) -> dg.ExecuteInProcessResult:
    """`dg.materialize` for the pipeline: the event sources' hours are every hour that holds source data.

    Unless the tags name a partition or hours, the run covers the hours of the `source` resource's data in one
    run (as `recopipeline materialize` does). Without a selection it materializes the nightly graph: every asset
    but the hourly refresh and the offline evaluation, which have tests of their own.
    """
    from recopipeline.runner import names_partitions, source_range_tags

    if selection is None:
        selection = [
            key for a in assets if isinstance(a, dg.AssetsDefinition) and a.is_executable
            for key, group in a.group_names_by_key.items() if group not in NOT_NIGHTLY
        ]
    hours = {} if names_partitions(tags) else source_range_tags(resources["source"].location())
    return dg.materialize(assets, selection=selection, resources=resources, tags={**hours, **(tags or {})}, **kwargs)


_DEFAULTS = {
    "customers": {"email": None, "signup_date": datetime(2025, 1, 1), "country": "GB"},
    "products": {"brand": None, "stock_quantity": 10, "is_active": True, "created_at": datetime(2025, 1, 1)},
    "orders": {"quantity": 1, "line_value": 10.0},
    "customer_interactions": {"session_id": None},
    "cart_activity": {"cart_status": "abandoned"},
    "merchandising_rules": {},
}
_PANDAS_TYPES = {"VARCHAR": "string", "TIMESTAMP": "datetime64[us]", "DOUBLE": "float64", "INTEGER": "int32",
                 "BOOLEAN": "bool"}


def rows(source: str, records: list[dict]) -> pd.DataFrame:
    """A contract-shaped table from a few hand-written records (unnamed optional columns get defaults)."""
    from recopipeline.lib.contract import SOURCES

    contract = SOURCES[source]
    defaults = _DEFAULTS[source]
    if source == "customer_interactions":
        records = [{"event_id": f"E{i}", **r} for i, r in enumerate(records, start=1)]
    full = [{**defaults, **r} for r in records]
    frame = pd.DataFrame(full, columns=contract.column_names)
    return frame.astype({c.name: _PANDAS_TYPES[c.type] for c in contract.columns})
