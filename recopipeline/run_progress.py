"""What a run started outside the UI is doing: each step as it ends, and a failure's root cause on one line.

`dg.execute_job` returns only when the run is over. The step processes write their events to the instance as they
happen, so `RunWatcher` reads the run's event log in a thread meanwhile (`DagsterInstance.get_records_for_run`
from a cursor) and reports each finished step.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import dagster as dg

LAUNCHED_BY_TAG = "recopipeline/launched_by"  # host:pid of the process that executes a run outside the daemon


@dataclass
class RunSummary:
    """What a finished run materialized (asset -> row count), how long each asset's step took, and what failed."""

    run_id: str
    success: bool
    materialized: dict[str, int | None] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # per asset: the seconds of the step that wrote it
    failures: list[str] = field(default_factory=list)  # one line per failed step, with the root cause


@dataclass(frozen=True)
class StepDone:
    """A step that has ended: the assets it materialized (name -> row count) and its seconds (None: failed)."""

    step: str
    assets: dict[str, int | None]
    seconds: float | None


Progress = Callable[[StepDone], None]


_WATCHED = {
    dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION,
    dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE,
}


class RunWatcher:
    """Follows the run with these tags (created after the watcher) in a thread; `finish` reads the rest."""

    def __init__(self, instance: dg.DagsterInstance, tags: dict[str, str], progress: Progress | None,
                 interval: float = 0.5):
        self.instance, self.tags, self.progress, self.interval = instance, tags, progress, interval
        self.created_after = datetime.now(timezone.utc)
        self.run_id: str | None = None
        self.cursor: str | None = None
        self.summary = RunSummary(run_id="", success=False)
        self._pending: dict[str, list[str]] = {}  # step -> assets materialized, reported when the step ends
        self._failed_checks: dict[str, list[str]] = {}  # step -> "asset: check (description)"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="recopipeline-run-watcher", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def finish(self, run_id: str, success: bool) -> RunSummary:
        """Read the rest of the run's events (it has ended) and return its summary."""
        self.run_id = self.run_id or run_id
        self.read()
        self.summary.run_id, self.summary.success = run_id, success
        return self.summary

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if self.run_id is None:
                    self.run_id = self._find_run()
                if self.run_id is not None:
                    self.read()
            except Exception:  # progress is best effort: the summary is read again when the run ends
                continue

    def _find_run(self) -> str | None:
        runs = self.instance.get_runs(
            dg.RunsFilter(tags=self.tags, created_after=self.created_after), limit=1
        )
        return runs[0].run_id if runs else None

    def read(self) -> None:
        with self._lock:
            while True:
                connection = self.instance.get_records_for_run(self.run_id, cursor=self.cursor, of_type=_WATCHED)
                for record in connection.records:
                    self._take(record.event_log_entry)
                self.cursor = connection.cursor
                if not connection.has_more:
                    return

    def _take(self, entry) -> None:
        event, step = entry.dagster_event, entry.step_key
        data = event.event_specific_data
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            materialization = data.materialization
            name = materialization.asset_key.to_user_string()
            # a source's step also records the quarantine: what that step quarantined, not the whole table
            count_key = "quarantined_rows" if name == "quarantine" else "dagster/row_count"
            rows = materialization.metadata.get(count_key)
            self.summary.materialized[name] = rows.value if rows else None
            self._pending.setdefault(step, []).append(name)
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION and not data.passed:
            if data.severity == dg.AssetCheckSeverity.ERROR and data.blocking:
                described = f" ({condense(data.description)})" if data.description else ""
                self._failed_checks.setdefault(step, []).append(
                    f"{data.asset_key.to_user_string()}: {data.check_name}{described}"
                )
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            seconds = data.duration_ms / 1000
            names = self._pending.pop(step, [])
            self.summary.seconds |= dict.fromkeys(names, seconds)
            self._report(step, names, seconds)
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE:
            self._report(step, self._pending.pop(step, []), None)
            checks = self._failed_checks.pop(step, [])
            cause = ("blocking check failed: " + "; ".join(checks)) if checks else root_cause(data.error)
            self.summary.failures.append(f"{step}: {cause}")
        elif event.event_type == dg.DagsterEventType.RUN_FAILURE and not self.summary.failures:
            error = getattr(data, "error", None)
            self.summary.failures.append(root_cause(error) if error else condense(entry.message or "failed"))

    def _report(self, step: str, names: list[str], seconds: float | None) -> None:
        if self.progress:
            self.progress(StepDone(step, {name: self.summary.materialized[name] for name in names}, seconds))


_QUALIFIED_CLASS = re.compile(r"^((?:\w+\.)*)(\w+): ")
_DUCKDB_DETAIL = re.compile(r'\{"exception_type".*\}')


def root_cause(error) -> str:
    """The deepest error of a step failure's chain of causes, on one line (the wrappers only say which op failed).

    Dagster's own exception classes are left out; others stay as a short name (`OSError: [Errno 28] …`).
    """
    if error is None:
        return "failed"
    while error.cause is not None:
        error = error.cause
    message = error.message.strip()
    match = _QUALIFIED_CLASS.match(message)
    if match:
        module, name = match.group(1), match.group(2)
        message = message[match.end():]
        if not (module.startswith("dagster") or name.startswith("Dagster")):
            message = f"{name}: {message}"
    return _DUCKDB_DETAIL.sub(_duckdb_detail, condense(message))


def _duckdb_detail(match: re.Match) -> str:
    """DuckDB puts an IO error's detail in JSON; keep its message."""
    try:
        return json.loads(match.group(0)).get("exception_message") or match.group(0)
    except ValueError:
        return match.group(0)


def condense(text: str) -> str:
    """A multi-line message on one line: lines joined with "; ", runs of white space made one space."""
    lines = [" ".join(line.split()) for line in text.strip().splitlines()]
    joined = "; ".join(line for line in lines if line)
    return re.sub(r":;", ":", joined)
