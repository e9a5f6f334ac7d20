"""The docs stay in step with the code: every contract column (type, nullability, length limit) and tuning value
is documented."""

from dataclasses import fields
from pathlib import Path

import pytest

from recopipeline.lib.contract import SOURCES
from recopipeline.lib.tuning import Tuning

DOCS = Path(__file__).parents[1] / "docs"


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_contract_column_is_documented(source):
    text = (DOCS / "data_contract.md").read_text()
    section = text.split(f"## {source} ")[1].split("\n## ")[0]
    for column in SOURCES[source].columns:
        null = "yes" if column.nullable else "no"
        assert f"| {column.name} | {column.type} | {null} | {column.max_length or '—'} |" in section


def test_every_tuning_value_is_documented():
    text = (DOCS / "configuration.md").read_text()
    missing = [f.name for f in fields(Tuning) if f"| `{f.name}` | " not in text]
    assert not missing
