"""The benchmark at scale xs: every stage of both paths timed, the floor measured, the JSON written by the command."""

import json

import pytest

from recopipeline.cli import main
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.stages import STAGES


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("home")
    out = home / "bench-xs.json"
    assert main(["bench", "--scale", "xs", "--home", str(home), "--json", str(out), "--floor-repeats", "1"]) == 0
    return json.loads(out.read_text())


def test_every_source_and_derived_asset_is_timed_with_rows_and_memory(bench_json):
    stages = {s["asset"]: s for s in bench_json["paths"]["nightly"]["stages"]}
    assert set(stages) == set(SOURCES) | {spec.name for spec in STAGES}
    assert all(s["seconds"] > 0 and s["peak_rss_bytes"] > 0 for s in stages.values())
    assert stages["customer_interactions"]["rows"] == bench_json["source_rows"]["customer_interactions"] > 10_000
    assert stages["customer_top_recommendations"]["rows"] > 0
    nightly = bench_json["paths"]["nightly"]
    assert nightly["seconds"] == pytest.approx(nightly["ingest_seconds"] + nightly["derived_seconds"])


def test_the_hourly_path_refreshes_the_newest_hour_of_the_data(bench_json):
    hourly = bench_json["paths"]["hourly"]
    steps = {s["asset"]: s for s in hourly["stages"]}
    assert set(steps) == set(SOURCES) | {"product_trending", "hourly_customer_refresh"}
    assert hourly["hour"] == "2026-09-30-23:00"  # the synthetic data ends at 2026-10-01 00:00
    assert hourly["touched_customers"] > 0
    assert steps["hourly_customer_refresh"]["rows"] == 20 * hourly["touched_customers"]  # top 20 each
    # only that hour's events are ingested again
    assert 0 < steps["customer_interactions"]["rows"] < bench_json["source_rows"]["customer_interactions"] / 100
    nightly = bench_json["paths"]["nightly"]["seconds"]
    assert bench_json["ratios"]["hourly_over_nightly"] == pytest.approx(hourly["seconds"] / nightly)


def test_the_floor_is_measured_in_the_same_run(bench_json):
    floor = bench_json["floor"]
    assert floor["seconds"] > 0 and len(floor["runs"]) == 2  # one run before and one after the pipeline
    assert floor["pairs"] > 1_000  # the (customer, product) groups of the affinity aggregation
    derived = bench_json["paths"]["nightly"]["derived_seconds"]
    assert bench_json["ratios"]["derived_over_floor"] == pytest.approx(derived / floor["seconds"])


def test_an_unknown_scale_is_one_line_error(capsys):
    assert main(["bench", "--scale", "xxl"]) == 2
    error = capsys.readouterr().err
    assert "invalid choice" in error and len(error.strip().splitlines()) == 1
