"""A warehouse after a nightly rebuild of synthetic xs data, built once per test session and copied per test.

The rebuild ingests every hour that holds data and rebuilds (and publishes) everything as of the start of the
busiest hour of the last day, so that hour can then be refreshed as the hourly job would.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dagster as dg

from recopipeline.defs.partitions import first_hour, range_tags
from recopipeline.defs.resources import SourceResource
from recopipeline.defs.stage import AS_OF_TAG
from recopipeline.lib.hourly import HOUR, source_hours
from recopipeline.lib.warehouse import Warehouse
from recopipeline_tests.conftest import resources_for

SOURCE = "synthetic:xs"


@dataclass(frozen=True)
class NightlyBase:
    root: Path  # holds warehouse/, warehouse-serving.db and input/
    first: datetime  # the first and last hour with data
    last: datetime
    hour: datetime  # the hour to refresh; the nightly tables are as of its start

    @property
    def input_cache(self) -> str:
        return str(self.root / "input")

    def copy_to(self, target: Path) -> Warehouse:
        """A copy of the warehouse and its serving database under `target` (the input is shared)."""
        shutil.copytree(self.root / "warehouse", target / "warehouse")
        shutil.copyfile(self.root / "warehouse-serving.db", target / "warehouse-serving.db")
        return Warehouse(str(target / "warehouse"), memory_limit="1GB", threads=2)

    def resources(self, store: Warehouse) -> dict:
        return resources_for(store, SOURCE, self.input_cache)


def job_selection(definitions: dg.Definitions, job: str) -> list[str]:
    keys = definitions.resolve_job_def(job).asset_layer.selected_asset_keys
    return sorted(key.to_user_string() for key in keys)


_BUILT: dict[Path, NightlyBase] = {}


def nightly_base(definitions: dg.Definitions, root: Path) -> NightlyBase:
    """The base under `root`, built on first use in this test session."""
    if root not in _BUILT:
        _BUILT[root] = _build(definitions, root)
    return _BUILT[root]


def _build(definitions: dg.Definitions, root: Path) -> NightlyBase:
    root.mkdir(parents=True, exist_ok=True)
    store = Warehouse(str(root / "warehouse"), memory_limit="1GB", threads=2)
    location = SourceResource(source=SOURCE, cache_dir=str(root / "input")).location()
    first, last = source_hours(location, first_hour(), datetime(2100, 1, 1))
    hour = busiest_hour(location, first + HOUR)
    result = dg.materialize(
        list(definitions.assets),
        selection=job_selection(definitions, "full_rebuild"),
        resources=resources_for(store, SOURCE, str(root / "input")),
        tags={**range_tags(first, last), AS_OF_TAG: hour.isoformat()},
    )
    assert result.success
    return NightlyBase(root=root, first=first, last=last, hour=hour)


def busiest_hour(location: Path, after: datetime) -> datetime:
    """The hour after `after` with the most active customers in the source files (xs data is sparse)."""
    import duckdb

    (hour,) = duckdb.sql(
        f"SELECT date_trunc('hour', interaction_timestamp) AS hour FROM '{location}/customer_interactions.parquet' "
        f"WHERE interaction_timestamp >= TIMESTAMP '{after:%Y-%m-%d %H:%M:%S}' "
        "GROUP BY ALL ORDER BY count(DISTINCT customer_id) DESC, hour LIMIT 1"
    ).fetchall()[0]
    return hour
