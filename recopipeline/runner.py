"""Running the asset graph on a real Dagster instance, outside the UI (CLI, scripts, tests)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from recopipeline.lib import settings

REPO_INSTANCE_CONFIG = Path(__file__).parents[1] / "dagster.yaml"


def full_rebuild() -> dg.JobDefinition:
    """The full-rebuild job, reconstructable in the executor's subprocesses."""
    from recopipeline.definitions import defs

    return defs().resolve_job_def("full_rebuild")


def instance_from_env() -> dg.DagsterInstance:
    """The instance in DAGSTER_HOME; by default a local one that uses the repository's dagster.yaml."""
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(settings.LOCAL_HOME / "dagster_home")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    config = Path(home) / "dagster.yaml"
    if not config.exists() and REPO_INSTANCE_CONFIG.exists():
        shutil.copyfile(REPO_INSTANCE_CONFIG, config)
    return dg.DagsterInstance.get()


@dataclass
class RunSummary:
    run_id: str
    success: bool
    materialized: dict[str, int | None] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def materialize(
    selection: Sequence[str] | None = None,
    tags: dict[str, str] | None = None,
    instance: dg.DagsterInstance | None = None,
    log_level: str = "INFO",
) -> RunSummary:
    """Materialize the whole graph (or the named assets) with the multiprocess executor."""
    instance = instance or instance_from_env()
    keys = [dg.AssetKey(name) for name in selection] if selection else None
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    with dg.execute_job(
        dg.reconstructable(full_rebuild), instance=instance, run_config=run_config, tags=tags or {},
        asset_selection=keys,
    ) as result:
        summary = RunSummary(run_id=result.run_id, success=result.success)
        for event in result.all_events:
            if event.event_type_value == "ASSET_MATERIALIZATION":
                materialization = event.event_specific_data.materialization
                rows = materialization.metadata.get("dagster/row_count")
                summary.materialized[materialization.asset_key.to_user_string()] = rows.value if rows else None
            elif event.event_type_value == "STEP_SUCCESS":
                summary.seconds[event.step_key] = event.event_specific_data.duration_ms / 1000
            elif event.event_type_value == "STEP_FAILURE":
                error = event.event_specific_data.error
                summary.failures.append(f"{event.step_key}: {error.message.strip() if error else 'failed'}")
    return summary
