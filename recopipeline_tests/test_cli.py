"""The `recopipeline` command: real subprocesses, one-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).parents[1]


def cli(*args, env=None, home=None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    if home:
        environment["RECOPIPELINE_HOME"] = str(home)
        environment.pop("RECOPIPELINE_WAREHOUSE", None)
    return subprocess.run([sys.executable, "-m", "recopipeline.cli", *args], capture_output=True, text=True,
                          env=environment, timeout=300)


def test_generate_writes_the_five_sources_with_progress(tmp_path):
    result = cli("generate", "--scale", "xs", "--out", str(tmp_path / "xs"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "xs").glob("*.parquet")) == [
        "cart_activity.parquet", "customer_interactions.parquet", "customers.parquet", "orders.parquet",
        "products.parquet"]
    assert "customer_interactions" in result.stdout and "generated scale xs" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["generate", "--scale", "huge", "--out", "x"], "unknown scale 'huge'"),
    (["recommend", "C1"], "nothing is published yet"),
    (["materialize", "--as-of", "yesterday"], "is not an ISO 8601 timestamp"),
])
def test_errors_are_one_clear_line(tmp_path, args, message):
    result = cli(*args, home=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("recopipeline: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.fixture
def hand_made(tmp_path, monkeypatch):
    """A warehouse with two hand-made tables under RECOPIPELINE_HOME (the commands run in this process)."""
    import pandas as pd

    from recopipeline.lib import settings
    from recopipeline.lib.warehouse import Warehouse
    from recopipeline_tests.conftest import put, rows

    for name in [key for key in os.environ if key.startswith("RECOPIPELINE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RECOPIPELINE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(settings, "LOCAL_HOME", tmp_path / "home")
    store = Warehouse(str(tmp_path / "home" / "warehouse"))
    put(store, "customer_top_recommendations", pd.DataFrame({
        "customer_id": ["C1", "C1"], "recommendation_rank": [1, 2], "product_id": ["P2", "P3"],
        "product_name": ["Two", "Three"], "category": ["A", "A"], "price": [1.0, 2.0],
        "recommendation_type": ["collaborative", "popular"], "recommendation_score": [0.5, 0.1],
        "evidence": ["P1", "popular:new"]}))
    put(store, "customers", rows("customers", [{"customer_id": "C1"}]))
    return store


def run(capsys, *args: str) -> tuple[int, str, str]:
    from recopipeline.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_sql_reads_the_warehouse(hand_made, capsys):
    code, out, err = run(capsys, "sql", "SELECT count(*) AS n FROM customer_top_recommendations")
    assert (code, out.split(), err) == (0, ["n", "2"], "")
    code, out, _ = run(capsys, "sql", "SELECT product_id FROM customer_top_recommendations c "
                                      "JOIN customers USING (customer_id) ORDER BY recommendation_rank")
    assert (code, out.split()) == (0, ["product_id", "P2", "P3"])
    code, out, _ = run(capsys, "sql", "EXPLAIN SELECT * FROM customers")
    assert code == 0 and "explain_key" in out


def test_sql_cannot_change_the_warehouse_or_read_other_files(hand_made, capsys, tmp_path):
    root = Path(hand_made.root)
    data = root / "customers" / "data.parquet"
    before = data.read_bytes()
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the warehouse's readers")
    refused = {
        f"COPY (SELECT 1 AS customer_id) TO '{data}' (FORMAT parquet)": "COPY statements are refused",
        f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{data}'": "EXPLAIN of anything but a SELECT is refused",
        f"ATTACH '{root / 'new.duckdb'}' (READ_WRITE)": "ATTACH statements are refused",
        f"SELECT * FROM read_text('{secret}')": f'Permission Error: Cannot access file "{secret}"',
        "SELECT * FROM read_text('/etc/passwd')": 'Cannot access file "/etc/passwd"',
        f"SELECT * FROM read_parquet('{root}/*/*.parquet')": "Permission Error",
        "CREATE TABLE t AS SELECT 1": "CREATE statements are refused",
        "INSTALL httpfs": "INSTALL statements are refused",
        "LOAD httpfs": "LOAD statements are refused",
        "SET enable_external_access = true": "SET statements are refused",
        "SELECT 1; COPY customers TO 'x.csv'": "2 statements given",
    }
    for query, message in refused.items():
        code, out, err = run(capsys, "sql", query)
        assert code == 2 and out == "", query
        assert err.count("\n") == 1 and err.startswith("recopipeline: error: ") and message in err, (query, err)
        assert "not for the warehouse's readers" not in out + err
    assert data.read_bytes() == before
    assert sorted(p.name for p in root.iterdir()) == ["customer_keys", "customer_top_recommendations", "customers"]


def serving_home(tmp_path, monkeypatch) -> str:
    """An empty RECOPIPELINE_HOME whose serving database the test publishes into; returns its URL."""
    from recopipeline.lib import settings

    for name in [key for key in os.environ if key.startswith("RECOPIPELINE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("RECOPIPELINE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(settings, "LOCAL_HOME", tmp_path / "home")
    return f"sqlite:///{tmp_path / 'home' / 'serving.db'}"


def test_recommend_prints_what_is_served_and_follows_a_rollback(tmp_path, monkeypatch, capsys):
    from recopipeline.serving import ServingDatabase
    from recopipeline_tests.serving_support import publish_generation

    database = ServingDatabase(serving_home(tmp_path, monkeypatch))
    publish_generation(database, "first")
    publish_generation(database, "second")
    code, out, _ = run(capsys, "recommend", "C00001", "--limit", "3")
    assert code == 0
    assert out.splitlines()[0] == "top 3 recommendations for customer C00001 (serving version 2, variant control):"
    assert "second" in out and "first" not in out
    assert run(capsys, "rollback")[0] == 0
    code, out, _ = run(capsys, "recommend", "C00001", "--limit", "3")
    assert "(serving version 1, variant control)" in out.splitlines()[0]
    assert "first" in out and "second" not in out
    code, out, _ = run(capsys, "recommend", "C404", "--limit", "2")  # unknown: what the API serves it
    assert code == 0 and out.startswith("customer 'C404' has no recommendations of its own; it is served the "
                                        "cold-start list (serving version 1, variant control):")
    database.dispose()


def test_popular_fills_are_shown_as_fill_and_scores_keep_their_digits(tmp_path, monkeypatch, capsys):
    from recopipeline.serving import COLD_START, Expected, ServingDatabase, publish
    from recopipeline_tests.serving_support import ONE_VARIANT

    database = ServingDatabase(serving_home(tmp_path, monkeypatch))
    own = [("P1", "collaborative", 0.1495, "P9"), ("P2", "ease", 0.000812, "P9"),
           ("P3", "popular", 1.87e-07, "popular:at_risk"), ("P4", "popular", 1.2e-07, "popular:at_risk")]
    rows = [{"customer_id": "C1", "variant": "control", "rank": rank, "product_id": product,
             "product_name": product, "recommendation_type": kind, "score": score, "evidence": evidence}
            for rank, (product, kind, score, evidence) in enumerate(own, start=1)]
    cold = [{"customer_id": COLD_START, "variant": "control", "rank": 1, "product_id": "P5", "product_name": "P5",
             "recommendation_type": "popular", "score": 1.0, "evidence": "popular:all"}]
    publish(database, [rows + cold], [[]], Expected(len(rows), 1, 0, ("control",)), experiment=ONE_VARIANT.to_json())
    code, out, _ = run(capsys, "recommend", "C1")
    table = [line.split() for line in out.splitlines()[2:6]]
    assert [row[4] for row in table] == ["0.1495", "0.000812", "fill", "fill"]
    assert out.splitlines()[-1].startswith("fill: a popular product of the customer's segment")
    code, out, _ = run(capsys, "recommend", "C2")  # the cold-start list: popularity scores, no fills
    assert out.splitlines()[1:] == [" rank product_id product_name    type score    evidence",
                                    "    1         P5           P5 popular     1 popular:all"]
    database.dispose()


def test_the_code_location_has_one_name_whatever_the_folder(tmp_path):
    """`dagster dev` warned once per load that the location's name did not match the project's (the folder's)."""
    import tomllib

    import yaml

    workspace = yaml.safe_load((REPOSITORY / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    project = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["tool"]["dg"]["project"]
    assert entry["python_module"]["location_name"] == project["code_location_name"] == "recopipeline"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECOPIPELINE_", "DAGSTER_"))}
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPOSITORY, capture_output=True, text=True, env={**env, "DAGSTER_HOME": str(tmp_path)}, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Validation successful for code location recopipeline." in output
    assert "does not match" not in output


REORDER = REPOSITORY / "recopipeline" / "deploy" / "reorder.yaml"


@pytest.mark.slow
def test_an_hourly_refresh_from_the_command_line(nightly, tmp_path_factory):
    """The hourly job in real step processes, with the re-order run config: each step is printed as it ends, the
    standard error stays empty, the run succeeds (it used to exit 2 on an asset without a row count) and what it
    published is what `recommend` prints."""
    import time

    import dagster as dg

    from recopipeline.lib.hourly import hour_key
    from recopipeline.lib.run_config import load_run_config

    root = tmp_path_factory.mktemp("cli_hourly")
    nightly.copy_to(root)
    (root / "home").mkdir()
    (root / "home" / "input").symlink_to(nightly.input_cache)
    serving = f"sqlite:///{root / 'warehouse-serving.db'}"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RECOPIPELINE_", "DAGSTER_"))}
    env |= {"RECOPIPELINE_HOME": str(root / "home"), "RECOPIPELINE_WAREHOUSE": str(root / "warehouse"),
            "RECOPIPELINE_SERVING_URL": serving, "RECOPIPELINE_SOURCE": "synthetic:xs",
            "DAGSTER_HOME": str(root / "dagster_home")}
    hour = hour_key(nightly.hour)
    command = [str(Path(sys.executable).parent / "recopipeline"), "materialize", "--job", "hourly_refresh",
               "--hour", hour, "--config", str(REORDER)]
    with open(root / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        lines = [(time.monotonic(), line.rstrip("\n")) for line in process.stdout]
        process.wait(timeout=600)
    text = "\n".join(line for _, line in lines)
    assert process.returncode == 0, text + (root / "stderr.txt").read_text()
    assert (root / "stderr.txt").read_text() == ""  # no DEBUG line per step process
    assert lines[0][1].startswith(f"materializing every asset of job hourly_refresh for hour {hour}, with run "
                                  f"config {REORDER} (source synthetic:xs, ")
    steps = [(moment, line.split()[0]) for moment, line in lines[1:-1]]
    assert [name for _, name in steps][-2:] == ["hourly_customer_refresh", "hourly_customer_publish"]
    # printed as each step ended (the steps run in this process here, about 2 s in all), not all at the end
    assert steps[-1][0] - steps[0][0] > 0.5
    assert lines[-1][1].startswith("run ") and " succeeded: " in lines[-1][1]

    with dg.DagsterInstance.from_config(str(root / "dagster_home")) as instance:
        (run,) = instance.get_runs()
        assert run.run_config["resources"] == load_run_config(REORDER)["resources"]
    from recopipeline.serving import ServingDatabase

    database = ServingDatabase(serving)
    with database.engine.connect() as conn:
        (customer,) = conn.exec_driver_sql(
            "SELECT customer_id FROM customer_recommendations WHERE recommendation_type = 'repurchase' "
            "ORDER BY customer_id LIMIT 1").one()
    database.dispose()
    shown = subprocess.run([command[0], "recommend", customer], capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 0 and " repurchase " in shown.stdout, shown.stdout + shown.stderr


def test_the_documented_reorder_run_config_is_the_shipped_file_and_the_evaluated_configuration(definitions):
    import dagster as dg
    import yaml

    from recopipeline.evaluation.run import REPEAT_SETTINGS
    from recopipeline.lib.run_config import load_run_config, tuning_values

    shipped = load_run_config(REORDER)
    assert tuning_values(shipped) == REPEAT_SETTINGS
    text = (REPOSITORY / "docs" / "configuration.md").read_text()
    (block,) = [b.split("\n", 1)[1] for b in text.split("```")[1::2] if b.startswith("yaml\n")]
    assert yaml.safe_load(block) == shipped
    for job in ("full_rebuild", "hourly_refresh"):
        dg.validate_run_config(definitions.resolve_job_def(job), shipped)
    readme = (REPOSITORY / "README.md").read_text()
    assert "[--config FILE]" in readme and "| `RECOPIPELINE_RUN_CONFIG` |" in readme
