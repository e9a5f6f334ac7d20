"""Great Expectations (GX Core 1.x) on a bounded sample, with results as plain data.

`dagster-ge` only supports GX 0.x, and GX's SQL engine failed on DuckDB through duckdb_engine, so GX gets a
pandas DataFrame of at most `gx_sample_rows` rows (a sample DuckDB draws) and validates it in an ephemeral
context: nothing is written to disk and analytics are off. Rules that need the whole table (uniqueness,
coverage) run as exact DuckDB aggregates instead; docs/data_quality.md says which rule runs where.

GX is imported on first use only: it takes seconds, and most pipeline steps never need it. A run that will
validate in this process can start the import early, in the background (`preload`), while its first steps read
the sources.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

EXAMPLES = 5


@dataclass(frozen=True)
class Expectation:
    """A GX expectation by class name (e.g. "ExpectColumnValuesToNotBeNull") and its keyword arguments."""

    kind: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """The result of one expectation on the sample."""

    expectation: str
    target: str
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: tuple = ()
    error: str | None = None


@dataclass(frozen=True)
class SuiteResult:
    """The result of a suite: one outcome per expectation, and how many rows the sample held."""

    suite: str
    rows: int
    outcomes: tuple[Outcome, ...]

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success]

    def markdown(self) -> str:
        """A table of the expectations, failures first, for a check's metadata."""
        lines = ["| expectation | column(s) | result | unexpected | examples |", "|---|---|---|---|---|"]
        for o in sorted(self.outcomes, key=lambda o: o.success):
            unexpected = "" if o.unexpected_count is None else str(o.unexpected_count)
            if o.unexpected_percent is not None:
                unexpected += f" ({o.unexpected_percent:.2f}%)"
            shown = o.error or ", ".join(_cell(v) for v in o.examples)
            lines.append(
                f"| {o.expectation} | {o.target} | {'pass' if o.success else '**FAIL**'} | {unexpected} | {shown} |"
            )
        return "\n".join(lines)


def preload() -> threading.Thread:
    """Import GX in a background thread (a later import in any thread waits for it, then finds it loaded)."""
    thread = threading.Thread(target=_import_gx, name="gx-preload", daemon=True)
    thread.start()
    return thread


def _import_gx() -> None:
    import great_expectations  # noqa: F401


def validate(frame: pd.DataFrame, suite: str, expectations: Sequence[Expectation]) -> SuiteResult:
    """Validate a DataFrame against the expectations in a throw-away GX context."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas(name="recopipeline")
        .add_dataframe_asset(name=suite)
        .add_batch_definition_whole_dataframe(name="sample")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    gx_suite = gx.ExpectationSuite(
        name=suite, expectations=[getattr(gx.expectations, e.kind)(**e.kwargs) for e in expectations]
    )
    result = batch.validate(gx_suite)
    return SuiteResult(suite=suite, rows=len(frame), outcomes=tuple(_outcome(r) for r in result.results))


def _outcome(result) -> Outcome:
    config = result.expectation_config
    kwargs = config.kwargs
    target = kwargs.get("column") or ", ".join(kwargs.get("column_list") or []) or "(table)"
    details = result.result or {}
    error = _error(result.exception_info or {})
    return Outcome(
        expectation=config.type,
        target=target,
        success=bool(result.success),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        examples=tuple(details.get("partial_unexpected_list") or ())[:EXAMPLES],
        error=error,
    )


def _error(info: Mapping) -> str | None:
    """The first error message GX reports; its exception info is flat or keyed by metric."""
    found = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, Mapping)]
    for entry in found:
        if entry.get("raised_exception") or entry.get("exception_message"):
            return str(entry.get("exception_message") or "raised an exception").strip().splitlines()[0]
    return None


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|")
