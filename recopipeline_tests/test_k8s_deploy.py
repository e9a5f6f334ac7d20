"""The Kubernetes deployment files (recopipeline/deploy/k8s), loaded through Dagster and dagster-k8s themselves.

No cluster is needed: the in-cluster Kubernetes configuration is replaced by a recorder, everything else is the
real instance machinery, with Dagster's storage in a fresh schema of the local Postgres (127.0.0.1:5432, `test`).
"""

from __future__ import annotations

import json
import re
import shutil
import tomllib
import uuid
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import kubernetes.config
import pytest
import yaml
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.executor.init import InitExecutorContext
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.job import construct_dagster_k8s_job
from dagster_postgres.utils import get_conn_string
from sqlalchemy import create_engine, text

from recopipeline.definitions import defs as load_defs
from recopipeline_tests.serving_support import POSTGRES_URL, drop_schema, fresh_schema

REPOSITORY = Path(__file__).resolve().parent.parent
K8S = REPOSITORY / "recopipeline" / "deploy" / "k8s"
NAMESPACE = "recopipeline"
ENV_SECRET = "recopipeline-env"
IMAGE = "registry.example.com/recopipeline:test"


def read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def incluster_loads() -> list[bool]:
    """Record the in-cluster configuration loads that K8sRunLauncher and k8s_job_executor make (no cluster here)."""
    calls: list[bool] = []
    patch = pytest.MonkeyPatch()
    patch.setattr(kubernetes.config, "load_incluster_config", lambda *args, **kwargs: calls.append(True))
    yield calls
    patch.undo()


@pytest.fixture(scope="module")
def schema():
    name = fresh_schema()
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    engine.dispose()
    yield name
    drop_schema(name)


@pytest.fixture(scope="module")
def instance(incluster_loads, schema, tmp_path_factory):
    """The Dagster instance of recopipeline/deploy/k8s/dagster.yaml, as a run pod loads it from $DAGSTER_HOME."""
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(K8S / "dagster.yaml", home / "dagster.yaml")
    patch = pytest.MonkeyPatch()
    patch.setenv("DAGSTER_POSTGRES_URL", f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
    loaded = dg.DagsterInstance.from_config(str(home))
    yield loaded
    loaded.dispose()
    patch.undo()


@pytest.fixture(scope="module")
def executor_config() -> dict:
    return read_yaml(K8S / "executor.yaml")


@pytest.fixture(scope="module")
def on_kubernetes() -> dg.Definitions:
    """The project's code location as it loads on Kubernetes (RECOPIPELINE_EXECUTOR=k8s, as values.yaml sets)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECOPIPELINE_EXECUTOR", "k8s")
        return load_defs()


def test_each_run_is_launched_as_a_kubernetes_job_in_the_namespace(instance, incluster_loads):
    launcher = instance.run_launcher
    assert isinstance(launcher, K8sRunLauncher)
    assert incluster_loads, "the launcher reads the cluster's credentials from its pod's service account"
    assert launcher.job_namespace == NAMESPACE
    assert launcher.service_account_name == "recopipeline"
    assert launcher.image_pull_policy == "IfNotPresent"
    # the ConfigMap the chart renders for the release `recopipeline` (values.yaml): run pods mount it
    assert launcher.instance_config_map == "recopipeline-dagster-instance"
    assert launcher.env_secrets == [ENV_SECRET]
    warehouse = [v.split("=", 1)[1] for v in launcher.env_vars if v.startswith("RECOPIPELINE_WAREHOUSE=")]
    assert len(warehouse) == 1 and warehouse[0].startswith("s3://")


def test_runs_and_events_are_stored_in_postgres(instance, schema):
    assert {type(s).__name__ for s in (instance.run_storage, instance.event_log_storage,
                                       instance.schedule_storage)} == {
        "PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"}
    engine = create_engine(POSTGRES_URL)
    with engine.connect() as conn:
        tables = set(conn.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": schema}
        ).scalars())
    engine.dispose()
    assert {"runs", "event_logs", "jobs"} <= tables


def test_run_monitoring_fails_unstarted_runs_and_resumes_dead_run_workers(instance):
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_start_timeout_seconds == 300
    assert instance.run_monitoring_cancel_timeout_seconds == 180
    # resuming needs a launcher that can resume (the instance refuses to load otherwise): K8sRunLauncher can
    assert instance.run_monitoring_max_resume_run_attempts == 2
    assert instance.run_launcher.supports_resume_run
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300


def test_queue_and_pools_are_the_repositorys(instance):
    """The same run queue limits and pools as the repository's dagster.yaml: one writer per asset, one refresh."""
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    config = instance.get_concurrency_config()
    repository = read_yaml(REPOSITORY / "dagster.yaml")["concurrency"]
    assert config.pool_config.default_pool_limit == repository["pools"]["default_limit"] == 1
    assert config.pool_config.pool_granularity.value == repository["pools"]["granularity"] == "op"
    assert config.run_queue_config.max_concurrent_runs == repository["runs"]["max_concurrent_runs"]
    assert list(config.run_queue_config.tag_concurrency_limits) == repository["runs"]["tag_concurrency_limits"]
    assert read_yaml(K8S / "dagster.yaml")["concurrency"] == repository


def test_the_executor_config_validates_against_every_job(on_kubernetes, executor_config):
    jobs = [job for job in on_kubernetes.resolve_all_job_defs() if not job.name.startswith("__")]
    assert {job.name for job in jobs} >= {"full_rebuild", "hourly_refresh", "ingest_sources"}
    for job in jobs:
        assert job.executor_def is k8s_job_executor
        processed = dg.validate_run_config(job, executor_config)["execution"]["k8s"]
        assert processed["max_concurrent"] == 4
        assert processed["step_k8s_config"]["container_config"]["resources"]["limits"]["memory"] == "6Gi"


def test_a_misspelt_executor_key_is_refused(on_kubernetes, executor_config):
    broken = json.loads(json.dumps(executor_config))
    broken["execution"]["config"]["max_concurent"] = broken["execution"]["config"].pop("max_concurrent")
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_concurent"):
        dg.validate_run_config(on_kubernetes.resolve_job_def("full_rebuild"), broken)


def test_the_per_step_overrides_name_steps_of_the_nightly_job(on_kubernetes, executor_config):
    ops = {node.name for node in on_kubernetes.resolve_job_def("full_rebuild").nodes}
    overrides = executor_config["execution"]["config"]["per_step_k8s_config"]
    assert overrides and set(overrides) <= ops


GIB = 1024**3
_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": GIB, "Ti": 1024**4, "K": 1000, "M": 1000**2, "G": 1000**3,
          "KB": 1000, "MB": 1000**2, "GB": 1000**3, "m": 0.001, "": 1}


def quantity(value: str) -> float:
    """A Kubernetes quantity ("6Gi", "250m", "2") or a DuckDB memory limit ("3GB") as a number."""
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()
    return float(number) * _UNITS[unit]


def step_container(instance, job: dg.JobDefinition, processed: dict, op: str):
    """The container of `op`'s step pod as dagster-k8s builds it: the run launcher's settings, then the
    executor's, then the op's own (K8sStepHandler's own merge, called with a step context that has only what it
    reads)."""
    executor = k8s_job_executor.executor_creation_fn(
        InitExecutorContext(job=InMemoryJob(job), executor_def=k8s_job_executor, executor_config=processed,
                            instance=instance)
    )
    handler = executor._step_handler
    step_context = SimpleNamespace(
        dagster_run=dg.DagsterRun(job_name=job.name, run_id=str(uuid.uuid4())),
        instance=instance,
        step_tags={op: {}},
        execute_step_args=SimpleNamespace(step_keys_to_execute=[op]),
        get_step_context=lambda key: SimpleNamespace(step=SimpleNamespace(op_name=key)),
    )
    context = handler._get_container_context(step_context)
    assert context.namespace == NAMESPACE
    pod_job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(IMAGE, instance.run_launcher),
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{op.replace('_', '-')}"[:63],
        user_defined_k8s_config=context.run_k8s_config,
        component="step_worker",
    )
    (container,) = pod_job.spec.template.spec.containers
    return container


def test_every_step_pod_holds_its_duckdb_and_the_secrets(instance, on_kubernetes, executor_config):
    """Each step's memory limit leaves room beyond DuckDB's for Python and numpy; its CPU limit covers DuckDB's
    threads; the object store's and Postgres' secrets reach every step pod."""
    job = on_kubernetes.resolve_job_def("full_rebuild")
    processed = dg.validate_run_config(job, executor_config)["execution"]["k8s"]
    for op in sorted(node.name for node in job.nodes):
        container = step_container(instance, job, processed, op)
        env = {var.name: var.value for var in container.env}
        assert container.image == IMAGE
        assert {source.secret_ref.name for source in container.env_from if source.secret_ref} == {ENV_SECRET}, op
        assert env["RECOPIPELINE_WAREHOUSE"].startswith("s3://"), op
        limits, requests = container.resources.limits, container.resources.requests
        duckdb = quantity(env["RECOPIPELINE_DUCKDB_MEMORY"])
        assert quantity(limits["memory"]) >= duckdb + 2 * GIB, op
        assert quantity(requests["memory"]) >= duckdb, op
        assert quantity(limits["cpu"]) >= int(env["RECOPIPELINE_DUCKDB_THREADS"]), op


def test_the_image_serves_the_workspaces_module_under_the_location_name():
    workspace = read_yaml(REPOSITORY / "workspace.yaml")["load_from"][0]["python_module"]
    location = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["dg"]["project"][
        "code_location_name"]
    dockerfile = (K8S / "Dockerfile").read_text()
    command = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE).group(1))
    assert command[:3] == ["dagster", "api", "grpc"]
    assert command[command.index("-m") + 1] == workspace["module_name"]
    assert re.search(r'^RUN pip install "\.\[k8s\]"', dockerfile, re.MULTILINE)
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)

    (deployment,) = read_yaml(K8S / "values.yaml")["dagster-user-deployments"]["deployments"]
    assert deployment["name"] == workspace["location_name"] == location
    assert deployment["dagsterApiGrpcArgs"] == ["-m", workspace["module_name"]]
    assert deployment["image"]["repository"] == IMAGE.rsplit(":", 1)[0]
    assert deployment["port"] == int(command[command.index("-p") + 1])


def test_the_helm_values_render_the_same_instance():
    """values.yaml sets what dagster.yaml says, in the chart's names: the launcher, the queue, the monitoring."""
    values = read_yaml(K8S / "values.yaml")
    instance_file = read_yaml(K8S / "dagster.yaml")
    launcher, file_launcher = values["runLauncher"], instance_file["run_launcher"]["config"]
    assert launcher["type"] == "K8sRunLauncher"
    k8s = launcher["config"]["k8sRunLauncher"]
    assert k8s["jobNamespace"] == file_launcher["job_namespace"]
    assert k8s["imagePullPolicy"] == file_launcher["image_pull_policy"]
    assert [secret["name"] for secret in k8s["envSecrets"]] == file_launcher["env_secrets"]
    assert k8s["envVars"] == file_launcher["env_vars"]
    assert k8s["resources"] == file_launcher["resources"]
    assert values["serviceAccount"]["name"] == file_launcher["service_account_name"]

    concurrency, file_concurrency = values["concurrency"], instance_file["concurrency"]
    assert concurrency["enabled"]
    assert {"max_concurrent_runs": concurrency["runs"]["maxConcurrentRuns"],
            "tag_concurrency_limits": concurrency["runs"]["tagConcurrencyLimits"]} == file_concurrency["runs"]
    assert {"default_limit": concurrency["pools"]["defaultLimit"],
            "granularity": concurrency["pools"]["granularity"]} == file_concurrency["pools"]
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] and coordinator["type"] == "QueuedRunCoordinator"
    # the chart refuses queue limits in both places; they are in `concurrency`
    assert not coordinator["config"]["queuedRunCoordinator"]

    monitoring = values["dagsterDaemon"]["runMonitoring"]
    snake = {re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower(): value for key, value in monitoring.items()}
    assert snake == instance_file["run_monitoring"]

    # the external Postgres, through the driver that is installed
    postgresql = values["postgresql"]
    assert postgresql["enabled"] is False and values["generatePostgresqlPasswordSecret"] is False
    url = get_conn_string(username="u", password="p", hostname=postgresql["postgresqlHost"],
                          db_name=postgresql["postgresqlDatabase"], port=str(postgresql["service"]["port"]),
                          scheme=postgresql["postgresqlScheme"])
    assert create_engine(url).dialect.driver == "psycopg2"


def test_the_code_locations_variables_reach_the_runs_it_launches():
    """The code location, its run pods and their step pods read the same warehouse and partitions."""
    (deployment,) = read_yaml(K8S / "values.yaml")["dagster-user-deployments"]["deployments"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"]
    assert deployment["env"]["RECOPIPELINE_WAREHOUSE"].startswith("s3://")
    assert "RECOPIPELINE_PARTITION_START" in deployment["env"]
    assert [secret["name"] for secret in deployment["envSecrets"]] == [ENV_SECRET]
