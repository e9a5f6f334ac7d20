"""Every error a user can cause is one line on standard error, with exit code 2, naming the cause."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recopipeline.cli import main
from recopipeline.lib import settings

REPOSITORY = Path(__file__).parents[1]
UNREACHABLE = "postgresql://someone:secret@127.0.0.1:1/serving"  # nothing listens on port 1


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty RECOPIPELINE_HOME; no other RECOPIPELINE_* setting of the caller's environment applies."""
    for name in [key for key in os.environ if key.startswith("RECOPIPELINE_")]:
        monkeypatch.delenv(name)
    folder = tmp_path / "home"
    monkeypatch.setenv("RECOPIPELINE_HOME", str(folder))
    monkeypatch.setattr(settings, "LOCAL_HOME", folder)  # read at import time
    return folder


def one_line_error(capsys, *args: str) -> str:
    """Run the command; it must fail with exit code 2 and one `recopipeline: error:` line. Returns the line."""
    code = main(list(args))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("recopipeline: error: "), err
    return lines[0]


def test_an_unknown_asset_is_named_before_anything_runs(home, capsys):
    line = one_line_error(capsys, "materialize", "--select", "customers,no_such_asset")
    assert "job full_rebuild has no asset 'no_such_asset'" in line
    assert not (home / "dagster_home").exists()  # no run was started


@pytest.mark.parametrize("args, message", [
    (["recommend", "C1", "--limit", "0"], "argument --limit: must be a whole number from 1 to 50, got '0'"),
    (["recommend", "C1", "--limit", "-1"], "got '-1'"),
    (["recommend", "C1", "--limit", "51"], "got '51'"),
    (["recommend", "C1", "--limit", "many"], "got 'many'"),
    (["no_such_command"], "invalid choice: 'no_such_command'"),
    (["sql"], "the following arguments are required: query"),
    (["materialize", "--job", "nightly"], "unknown job 'nightly'; choose one of full_rebuild, hourly_refresh"),
    (["materialize", "--job", "hourly_refresh"], "the hourly_refresh job needs --hour"),
    (["materialize", "--hour", "yesterday"], "hours 'yesterday' are not like 2026-09-30-23:00"),
    (["materialize", "--executor", "threads"], "unknown executor 'threads'; choose one of auto, in_process, "
                                               "multiprocess"),
    (["report"], "nothing to draw: name result files with --bench and/or --evaluation"),
    (["report", "--bench", "missing.json"], "missing.json: No such file or directory"),
])
def test_usage_errors(home, capsys, args, message):
    assert message in one_line_error(capsys, *args)


def test_a_report_of_the_wrong_kind_of_file(home, capsys):
    bench = str(REPOSITORY / "docs" / "benchmarks" / "bench-s.json")
    line = one_line_error(capsys, "report", "--evaluation", bench)
    assert "is not a result of recopipeline evaluate --json" in line


def test_generate_into_an_existing_file(home, capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    assert f"--out {target} is a file" in one_line_error(capsys, "generate", "--out", str(target))
    assert target.read_text() == "not a directory"


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A directory nobody may write to: immutable for root (chattr +i), mode 0555 for anyone else."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("root cannot make a directory immutable here (chattr +i)")
        yield folder
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


@pytest.mark.parametrize("command", [["materialize"], ["demo"]])
def test_an_unwritable_home(home, capsys, monkeypatch, unwritable, command):
    monkeypatch.setattr(settings, "LOCAL_HOME", unwritable)
    line = one_line_error(capsys, *command)
    assert f"RECOPIPELINE_HOME {unwritable} is not writable: " in line
    assert line.endswith(("Operation not permitted", "Permission denied", "Read-only file system"))


def test_a_home_that_is_a_file(home, capsys, monkeypatch, tmp_path):
    (tmp_path / "file").write_text("")
    monkeypatch.setattr(settings, "LOCAL_HOME", tmp_path / "file" / "home")
    assert "is not writable: Not a directory" in one_line_error(capsys, "materialize")


@pytest.mark.parametrize("command", [["rollback"], ["recommend", "C1"]])
def test_an_unreachable_serving_database(home, capsys, monkeypatch, command):
    monkeypatch.setenv("RECOPIPELINE_SERVING_URL", UNREACHABLE)
    line = one_line_error(capsys, *command)
    assert "serving database postgresql://someone:***@127.0.0.1:1/serving: " in line
    assert "Connection refused" in line and "secret" not in line


def test_nothing_published_yet(home, capsys):
    assert "nothing is published yet" in one_line_error(capsys, "recommend", "C1")
    assert "nothing is published yet" in one_line_error(capsys, "rollback")


TUNING = "resources:\n  tuning:\n    config:\n"


@pytest.mark.parametrize("text, message", [
    (None, "run config {path}: No such file or directory"),
    ("resources: [1, 2\n", "run config {path} is not valid YAML at line 2"),
    ("- 1\n- 2\n", "run config {path} must be a mapping like the launchpad's"),
    (TUNING + "      weight_eaze: 0.5\n", "run config {path}: unknown tuning value weight_eaze"),
    (TUNING + "      weight_ease: lots\n", "run config {path}: tuning value weight_ease must be a number, got 'lots'"),
    (TUNING + "      exclude_purchased: 0\n", "tuning value exclude_purchased must be true or false, got 0"),
    (TUNING + "      weight_repurchase: 1.0\n", "run config {path}: the repurchase strategy needs exclude_purchased"),
    ("resources:\n  tunnig:\n    config: {}\n",
     '{path}: run config does not fit job full_rebuild: Received unexpected config entry "tunnig"'),
    ("loggers:\n  console:\n    config:\n      log_level: 7\n", "{path}: run config does not fit job full_rebuild"),
])
def test_a_bad_run_config(home, capsys, tmp_path, text, message):
    path = tmp_path / "run_config.yaml"
    if text is not None:
        path.write_text(text)
    line = one_line_error(capsys, "materialize", "--config", str(path))
    assert message.format(path=path) in line
    assert not (home / "dagster_home").exists()


def test_a_bad_run_config_named_in_the_environment(home, capsys, monkeypatch, tmp_path):
    path = tmp_path / "run_config.yaml"
    path.write_text(TUNING + "      top_n: 0\n")
    monkeypatch.setenv("RECOPIPELINE_RUN_CONFIG", str(path))
    assert f"run config {path}: top_n must be between 1" in one_line_error(capsys, "materialize")


def test_the_installed_command_gives_one_line_too(home, tmp_path):
    script = Path(sys.executable).parent / "recopipeline"
    env = {**os.environ, "RECOPIPELINE_HOME": str(home)}
    result = subprocess.run([str(script), "materialize", "--select", "no_such_asset"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["recopipeline: error: job full_rebuild has no asset 'no_such_asset'"]


def test_the_root_cause_of_a_step_failure_is_the_deepest_error():
    from dagster._utils.error import serializable_error_info_from_exc_info

    from recopipeline.run_progress import root_cause

    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as error:
            raise RuntimeError('Error occurred while executing op "product_recommendations":') from error
    except RuntimeError:
        info = serializable_error_info_from_exc_info(sys.exc_info())
    assert root_cause(info) == "OSError: [Errno 28] No space left on device"


# ---- failed runs: the one line carries the cause -------------------------------------------------------------

CONTRACT_FILES = {  # the five sources, one customer twice (a duplicate key: quarantined)
    "customers.csv": "customer_id,email,signup_date,country\nC1,,2026-01-01 00:00:00,GB\n"
                     "C1,,2026-01-02 00:00:00,GB\nC2,,2026-01-01 00:00:00,FR\n",
    "products.csv": "product_id,product_name,category,brand,price,stock_quantity,is_active,created_at\n"
                    "P1,Mug,kitchen,,5.0,3,true,2026-01-01 00:00:00\n",
    "orders.csv": "order_id,customer_id,product_id,order_timestamp,quantity,line_value\n",
    "customer_interactions.csv": "event_id,customer_id,product_id,interaction_type,interaction_timestamp,session_id\n",
    "cart_activity.csv": "cart_id,customer_id,product_id,added_at,cart_status\n",
}


def run_customers_ingest(tmp_path: Path, *options: str, **env: str) -> subprocess.CompletedProcess:
    """`recopipeline materialize --select customers` over CONTRACT_FILES, in real step processes."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name, text in CONTRACT_FILES.items():
        (inbox / name).write_text(text)
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("RECOPIPELINE_", "DAGSTER_"))}
    environment |= {"RECOPIPELINE_HOME": str(tmp_path / "home"), "RECOPIPELINE_SOURCE": str(inbox),
                    "DAGSTER_HOME": str(tmp_path / "dagster_home"), **env}
    command = [str(Path(sys.executable).parent / "recopipeline"), "materialize", "--select", "customers",
               "--hour", "2026-09-30-00:00", *options]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)


@pytest.mark.slow
def test_a_failed_blocking_check_is_named(tmp_path):
    strict = tmp_path / "strict.yaml"
    strict.write_text(TUNING + "      max_quarantine_share: 0.0\n      quarantine_share_min_rows: 0\n")
    result = run_customers_ingest(tmp_path, "--config", str(strict))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("recopipeline: error: run ") and " failed: customers: blocking check failed: " in line
    assert line.endswith("customers: quarantine_share (1 of 3 input rows quarantined (33.33%; allowed 0.00%))")
    assert "customers" in result.stdout.splitlines()[1] and "failed  (and 1 row quarantined)" in result.stdout


@pytest.fixture
def full_disk(tmp_path) -> Path:
    """A directory on a tiny file system that is already full (a tmpfs; needs the right to mount)."""
    folder = tmp_path / "full"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        with open(folder / "filler", "wb") as filler:
            try:
                filler.write(b"\0" * 2**20)
            except OSError:
                pass
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
def test_a_full_disk_is_the_cause_not_the_op(tmp_path, full_disk):
    result = run_customers_ingest(tmp_path, RECOPIPELINE_WAREHOUSE=str(full_disk / "warehouse"))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert " failed: customers: IOException: " in line and line.endswith(": No space left on device")
