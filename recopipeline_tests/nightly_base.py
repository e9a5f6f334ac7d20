"""A warehouse after a nightly rebuild of synthetic xs data, built once per test session and copied per test.

The rebuild ingests every hour that holds data and rebuilds (and publishes) everything as of the start of the
busiest hour of the last day, so that hour can then be refreshed as the hourly job would.

Tests get it through the session fixture `nightly` (conftest.py). They may read the base itself; a test or module
that writes tables, the serving database or source files works on a copy (`copy_to`).
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

    @property
    def store(self) -> Warehouse:
        """The base's own warehouse: read it, never write it."""
        return Warehouse(str(self.root / "warehouse"), memory_limit="1GB", threads=2)

    @property
    def tags(self) -> dict[str, str]:
        """The run tags of the rebuild: every hour with data, as of the start of `hour`."""
        return {**range_tags(self.first, self.last), AS_OF_TAG: self.hour.isoformat()}

    def copy_to(self, target: Path, serving: bool = True, inputs: bool = False) -> Warehouse:
        """A copy of the warehouse under `target`, with a copy of its serving database unless `serving` is false
        (the copy then publishes into a new one). The input is shared unless `inputs` asks for a copy of it too:
        tests whose runs write source files (feedback clicks) need their own, at `target / "input"`."""
        shutil.copytree(self.root / "warehouse", target / "warehouse")
        if serving:
            shutil.copyfile(self.root / "warehouse-serving.db", target / "warehouse-serving.db")
        if inputs:
            shutil.copytree(self.root / "input", target / "input")
        return Warehouse(str(target / "warehouse"), memory_limit="1GB", threads=2)

    def resources(self, store: Warehouse, input_cache: str | None = None, **tuning) -> dict:
        """The resources of a run over `store`, reading the base's input unless given another copy of it."""
        return resources_for(store, SOURCE, input_cache or self.input_cache, **tuning)

    def rebuild(self, definitions: dg.Definitions, root: Path) -> Warehouse:
        """The same nightly rebuild again, from the same input, into a new warehouse under `root`."""
        store = Warehouse(str(root / "warehouse"), memory_limit="1GB", threads=2)
        result = dg.materialize(
            list(definitions.assets), selection=job_selection(definitions, "full_rebuild"),
            resources=resources_for(store, SOURCE, self.input_cache), tags=self.tags,
        )
        assert result.success
        return store


def job_selection(definitions: dg.Definitions, job: str) -> list[str]:
    keys = definitions.resolve_job_def(job).asset_layer.selected_asset_keys
    return sorted(key.to_user_string() for key in keys)


def build_nightly_base(definitions: dg.Definitions, root: Path) -> NightlyBase:
    """The base under `root` (the session fixture `nightly` builds it once per test session)."""
    root.mkdir(parents=True, exist_ok=True)
    location = SourceResource(source=SOURCE, cache_dir=str(root / "input")).location()
    first, last = source_hours(location, first_hour(), datetime(2100, 1, 1))
    base = NightlyBase(root=root, first=first, last=last, hour=busiest_hour(location, first + HOUR))
    base.rebuild(definitions, root)
    return base


def busiest_hour(location: Path, after: datetime) -> datetime:
    """The hour after `after` with the most active customers in the source files (xs data is sparse)."""
    import duckdb

    (hour,) = duckdb.sql(
        f"SELECT date_trunc('hour', interaction_timestamp) AS hour FROM '{location}/customer_interactions.parquet' "
        f"WHERE interaction_timestamp >= TIMESTAMP '{after:%Y-%m-%d %H:%M:%S}' "
        "GROUP BY ALL ORDER BY count(DISTINCT customer_id) DESC, hour LIMIT 1"
    ).fetchall()[0]
    return hour
