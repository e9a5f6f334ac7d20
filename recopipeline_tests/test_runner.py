"""Which executor `recopipeline materialize` runs a job with, and that its run config fits the jobs."""

from __future__ import annotations

import sys

import dagster as dg
import pytest

from recopipeline.runner import IN_PROCESS_BELOW_BYTES, JOBS, choose_executor, execution_config


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "source"
    folder.mkdir()
    (folder / "customers.csv").write_bytes(b"x" * 1000)
    return folder


def test_a_small_rebuild_and_every_hourly_refresh_run_in_process(source):
    assert choose_executor("full_rebuild", location=source) == "in_process"
    assert choose_executor("hourly_refresh", location=source) == "in_process"


def test_a_large_rebuild_runs_a_process_per_step(source):
    with open(source / "interactions.parquet", "wb") as file:
        file.truncate(IN_PROCESS_BELOW_BYTES)  # sparse: no disk space used
    assert choose_executor("full_rebuild", location=source) == "multiprocess"
    assert choose_executor("hourly_refresh", location=source) == "in_process"


@pytest.mark.parametrize("executor", ["in_process", "multiprocess"])
def test_a_named_executor_is_used_as_named(source, executor):
    assert choose_executor("full_rebuild", executor, location=source) == executor


@pytest.mark.parametrize("job", sorted(JOBS))
@pytest.mark.parametrize("executor", ["in_process", "multiprocess"])
def test_the_execution_config_fits_the_jobs(job, executor):
    resolved = dg.validate_run_config(JOBS[job](), execution_config(executor))["execution"]
    assert list(resolved["multi_or_in_process_executor"]) == [executor]


def test_the_forkserver_preloads_the_code_location_and_great_expectations_last():
    config = execution_config("multiprocess")["execution"]["config"]["multiprocess"]
    preload = config["start_method"]["forkserver"]["preload_modules"]
    assert preload[0] == "recopipeline.definitions" and preload[-1] == "great_expectations"
    assert {"recopipeline.defs.sources.assets", "recopipeline.defs.quality.source_checks"} <= set(preload)
    JOBS["full_rebuild"]()  # building the job imports every module the step processes need
    assert set(preload[:-1]) <= set(sys.modules)
