"""A shop's own history, years before the default partition start: the nightly and an hourly run, end to end.

The grocery chain's 2017 transactions of issue #12 in miniature: the synthetic xs data set ending on
2018-01-01, with one bad order line in an hour of two. The runs are processes of their own, because the
partitions are built from RECOPIPELINE_PARTITION_START when the code location loads: the nightly `full_rebuild`
in one process (fast), the hourly refresh through `recopipeline materialize`, the command of the issue.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from recopipeline.lib.generator import generate

HOUR = "2018-01-01-03:00"  # two order lines in the data set


def shop_history(folder: Path) -> Path:
    """The xs data set over 2017-10-04 .. 2018-01-01, with the first order line of HOUR made negative."""
    generate("xs", folder, end=datetime(2018, 1, 2))
    orders = pd.read_parquet(folder / "orders.parquet")
    in_hour = orders.index[orders.order_timestamp.dt.strftime("%Y-%m-%d-%H:00") == HOUR]
    assert len(in_hour) == 2
    orders.loc[in_hour[0], "line_value"] = -orders.loc[in_hour[0], "line_value"]
    orders.to_parquet(folder / "orders.parquet", index=False)
    return folder


# the nightly job over every hour of the data, in one process, on the instance in DAGSTER_HOME
NIGHTLY = """
from recopipeline.runner import full_rebuild, instance_from_env, source_range_tags
result = full_rebuild().execute_in_process(instance=instance_from_env(), tags=source_range_tags())
"""


def python(home: Path, *args: str) -> subprocess.CompletedProcess:
    """A Python process with the shop's settings: its source, home and partition start."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RECOPIPELINE_")}
    env |= {"RECOPIPELINE_HOME": str(home), "RECOPIPELINE_SOURCE": str(home / "shop"),
            "RECOPIPELINE_PARTITION_START": "2018-01-01", "DAGSTER_HOME": str(home / "dagster_home")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_a_nightly_and_an_hourly_run_on_history_before_the_default_start(tmp_path):
    shop_history(tmp_path / "shop")
    warehouse = tmp_path / "warehouse"

    nightly = python(tmp_path, "-c", NIGHTLY)
    assert nightly.returncode == 0, nightly.stderr[-3000:]
    # the first partition holds the history; 1 bad line of 1,410 stays under the share limit
    first = warehouse / "orders" / "2018-01-01-0000.parquet"
    ((oldest,),) = duckdb.sql(f"SELECT min(order_timestamp) FROM '{first}'").fetchall()
    assert oldest < datetime(2017, 10, 5)
    assert not list((warehouse / "orders").glob("2026-*"))

    hourly = python(tmp_path, "-m", "recopipeline.cli", "materialize", "--job", "hourly_refresh", "--hour", HOUR)
    assert hourly.returncode == 0, hourly.stderr
    (run_id,) = re.findall(r"run (\S+) succeeded", hourly.stdout)
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    evaluations = [r.event_log_entry.get_dagster_event().asset_check_evaluation_data for r in records]
    checks = {(e.asset_key.to_user_string(), e.check_name): e for e in evaluations}
    share = checks[("orders", "quarantine_share")]
    assert share.passed
    assert share.description == "1 of 2 input rows quarantined (50.00%; the share rule applies from 100 input rows; below, at most 1 row(s))"
    # the bad line is quarantined in its hour, the good one accepted, and the hour's customers refreshed
    quarantined = pd.read_parquet(warehouse / "quarantine" / "orders__2018-01-01-0300.parquet")
    assert quarantined.reason.tolist() == ["negative_line_value"]
    assert len(pd.read_parquet(warehouse / "orders" / "2018-01-01-0300.parquet")) == 1
    refreshed = pd.read_parquet(warehouse / "hourly_customer_refresh" / "2018-01-01-0300.parquet")
    assert len(refreshed) and refreshed.customer_id.nunique() >= 1
