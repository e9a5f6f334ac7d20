"""The one reader of source files: a damaged line is quarantined, and never costs the rows around it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from recopipeline.defs.partitions import first_hour, range_tags
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.hourly import source_hours
from recopipeline.lib.ingest import event_time_span
from recopipeline.lib.sources import SourceError
from recopipeline.lib.warehouse import Warehouse
from recopipeline_tests.conftest import materialize_assets, resources_for
from recopipeline_tests.test_validation import GOOD, HEADERS, write_sources

# Events of three hours after the first partition; the last hour holds five of them.
HOURLY_EVENTS = [
    f"H{i},C1,P1,view,2026-10-01 {hour}:{minute:02d}:00,S1"
    for i, (hour, minute) in enumerate([(10, 5), (10, 40), (11, 15)] + [(12, m) for m in (1, 10, 20, 30, 40)])
]
DAMAGE = {
    # the file ends in the middle of a line (no newline): the line is malformed, the rows before it are fine
    "truncated_last_line": (HOURLY_EVENTS, "H99,C1,P1,vi", False),
    # one line in the middle has a field too many
    "extra_field": (HOURLY_EVENTS[:4] + ["H98,C1,P1,view,2026-10-01 11:30:00,S1,surplus"] + HOURLY_EVENTS[4:], None, True),
}


def damaged_location(root: Path, damage: str) -> Path:
    events, tail, newline = DAMAGE[damage]
    folder = write_sources(root / "input")
    lines = [HEADERS["customer_interactions"], *GOOD["customer_interactions"], *events]
    text = "\n".join(lines) + "\n" + (tail or "")
    (folder / "customer_interactions.csv").write_text(text if tail or newline else text.rstrip("\n"))
    return folder


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_line_is_quarantined_and_every_valid_row_is_accepted(definitions, tmp_path, damage):
    folder = damaged_location(tmp_path, damage)
    files = [folder / "customer_interactions.csv"]
    span = event_time_span(files, SOURCES["customer_interactions"])
    assert span == (datetime(2026, 9, 1, 9), datetime(2026, 10, 1, 12, 40))  # the last hour is seen
    assert source_hours(folder, first_hour(), datetime(2026, 11, 1))[1] == datetime(2026, 10, 1, 12)

    store = Warehouse(str(tmp_path / "warehouse"), memory_limit="1GB", threads=2)
    result = materialize_assets(
        list(definitions.assets), selection=list(SOURCES), resources=resources_for(store, source=str(folder),
                                                                                    max_quarantine_share=1.0),
    )
    assert result.success
    accepted = store.read("SELECT event_id FROM customer_interactions ORDER BY event_id", inputs=["customer_interactions"])
    held = store.read("SELECT reason FROM quarantine WHERE source = 'customer_interactions'", inputs=["quarantine"])
    valid = len(GOOD["customer_interactions"]) + len(HOURLY_EVENTS)
    assert len(accepted) == valid  # the last hour's five rows included
    assert held.reason.tolist() == ["malformed_line"]
    input_lines = len((folder / "customer_interactions.csv").read_text().rstrip("\n").split("\n")) - 1
    assert len(accepted) + len(held) == input_lines


def test_a_quote_that_is_never_closed_fails_the_file_instead_of_swallowing_its_rows(definitions, tmp_path):
    folder = write_sources(tmp_path / "input")
    lines = [HEADERS["customer_interactions"], 'E1,C1,P1,view,2026-09-01 09:00:00,"S1', *HOURLY_EVENTS]
    (folder / "customer_interactions.csv").write_text("\n".join(lines) + "\n")
    store = Warehouse(str(tmp_path / "warehouse"), memory_limit="1GB", threads=2)
    result = materialize_assets(
        list(definitions.assets), selection=list(SOURCES), raise_on_error=False,
        resources=resources_for(store, source=str(folder)), tags=range_tags(first_hour(), first_hour()),
    )
    (failure,) = [e.event_specific_data.error.message for e in result.all_events
                  if e.event_type_value == "STEP_FAILURE"]
    assert "the record from line 2 runs over several lines" in failure and len(failure.strip().splitlines()) == 1
    assert not store.exists("customer_interactions")


@pytest.mark.parametrize("header", ["event_id,customer_id,,product_id", "event_id,event_id,customer_id"])
def test_an_empty_or_repeated_header_name_is_one_clear_line(tmp_path, header):
    path = tmp_path / "customer_interactions.csv"
    path.write_text(header + "\n")
    with pytest.raises(SourceError, match="has an empty or repeated column name"):
        event_time_span([path], SOURCES["customer_interactions"])
