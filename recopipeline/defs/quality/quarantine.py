"""The quarantine as a Dagster asset, downstream of the sources; each ingest records a materialization of it.

Its files and their names are described in `lib/quarantine.py`.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from recopipeline.defs.stage import KINDS, OWNERS, code_references
from recopipeline.lib.contract import SOURCES
from recopipeline.lib.quarantine import QUARANTINE
from recopipeline.lib.validation import REASONS

quarantine = dg.AssetSpec(
    QUARANTINE,
    group_name="quality",
    deps=list(SOURCES),
    kinds=KINDS,
    owners=OWNERS,
    description=(
        "Source rows that failed validation at ingest: source, reason, detail, the raw row as JSON text, "
        "file and row, run id and ingest time. Written by the source assets; see docs/data_quality.md."
    ),
    metadata={
        "reasons": dg.MetadataValue.text(", ".join(REASONS)),
        **code_references(
            *(Path(__file__).parents[2] / "lib" / f for f in ("validation.py", "ingest.py", "quarantine.py"))
        ),
    },
)

