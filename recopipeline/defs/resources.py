"""Resources: the warehouse, the source location, the tuning values and the serving database, with local defaults."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import dagster as dg

from recopipeline.lib import settings
from recopipeline.lib.sources import resolve_location
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse
from recopipeline.serving.database import ServingDatabase


class WarehouseResource(dg.ConfigurableResource):
    """The Parquet warehouse under one storage root; each step computes in its own in-memory DuckDB session."""

    root: str
    memory_limit: str = "3GB"
    threads: int = 2

    def get(self) -> Warehouse:
        return Warehouse(root=self.root, memory_limit=self.memory_limit, threads=self.threads)


class SourceResource(dg.ConfigurableResource):
    """Where the sources come from: `synthetic:<scale>`, `online_retail:sample|<file>` or a directory."""

    source: str
    seed: int = 42
    cache_dir: str

    def location(self) -> Path:
        return resolve_location(self.source, Path(self.cache_dir), seed=self.seed)


class ServingResource(dg.ConfigurableResource):
    """The serving database (SQLAlchemy URL: a SQLite file or Postgres) that publishing writes and the API reads."""

    url: str
    db_schema: str = ""  # Postgres only: the schema of the serving tables (default: the search path's)
    keep_versions: int = 3  # published versions kept for rollback, the live one included
    max_shrink: float = 0.5  # refuse a version with fewer rows than (1 - max_shrink) x the live one's
    relations_per_product: int = 20  # similar / complementary / bought-together products kept per product

    def database(self) -> ServingDatabase:
        return ServingDatabase(self.url, schema=self.db_schema or None)


_PY_TYPES = {"float": float, "int": int, "str": str, "bool": bool}


def _tuning_resource_class() -> type:
    """A Dagster resource with exactly the fields and defaults of `Tuning` (one definition, two faces)."""
    namespace = {
        "__annotations__": {f.name: _PY_TYPES[f.type] for f in fields(Tuning)},
        "__doc__": "Tuning values of every stage; see docs/configuration.md.",
        "__module__": __name__,
        "get": lambda self: Tuning.from_dict(self.model_dump()),
        **{f.name: f.default for f in fields(Tuning)},
    }
    return type("TuningResource", (dg.ConfigurableResource,), namespace)


TuningResource = _tuning_resource_class()


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """The resources as the environment configures them (embedded defaults when unset)."""
    return {
        "warehouse": WarehouseResource(
            root=settings.warehouse_root(),
            memory_limit=settings.duckdb_memory_limit(),
            threads=settings.duckdb_threads(),
        ),
        "source": SourceResource(source=settings.source_spec(), cache_dir=str(settings.LOCAL_HOME / "input")),
        "tuning": TuningResource(),
        "serving": ServingResource(url=settings.serving_url(), db_schema=settings.serving_schema() or ""),
    }


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources=default_resources())
