"""The code location: every definition under `defs/`, loaded by folder, with the executor of its jobs."""

from pathlib import Path

import dagster as dg

from recopipeline.lib import settings


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    if settings.step_executor() == "k8s":  # a Kubernetes Job per step (recopipeline/deploy/k8s/executor.yaml)
        from dagster_k8s import k8s_job_executor

        return dg.Definitions.merge(loaded, dg.Definitions(executor=k8s_job_executor))
    return loaded
