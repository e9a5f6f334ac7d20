"""The one reader of source files: every part of the pipeline that looks into a source file reads it here.

The ingest, the hour detection of a run (`event_time_span`), the file sensor and the tools all use
`load_raw`, so they see exactly the same rows. The files are exposed in a DuckDB session as the relation
`raw_input`: the contract's columns exactly as read (text for CSV, the file's own types for Parquet) plus
`_file` and `_row`, the file and the 1-based position of the row in it, which makes "the first of two
duplicates" well defined. CSV lines that DuckDB cannot split into the header's columns do not fail the read:
DuckDB's reject tables (`store_rejects`) collect them, with DuckDB's reason, in `malformed_lines`, so they
can be quarantined.

A file that cannot hold rows at all (zero bytes, unreadable, an empty or repeated header name, or missing a
required contract column) is a `SourceError`, and so is one whose lines cannot be told apart (a quote that is
never closed swallows the lines after it: quarantining them as one line would lose rows). An optional (nullable) contract column may be absent from a file: it is read as NULL. Columns
beyond the contract are ignored.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from recopipeline.lib.contract import SourceContract
from recopipeline.lib.sources import SourceError
from recopipeline.lib.validation import typed_value
from recopipeline.lib.warehouse import run

RAW_INPUT = "raw_input"
MALFORMED_LINES = "malformed_lines"

# The contract's CSV dialect: a header line, comma-separated, double quotes. Every value is read as text and
# lines that do not split into the header's columns go to DuckDB's reject tables.
_CSV_OPTIONS = "header = true, delim = ',', quote = '\"', escape = '\"', auto_detect = false, store_rejects = true"


@dataclass(frozen=True)
class RawInput:
    """What was read: parsed rows (in `raw_input`) and malformed CSV lines (in `malformed_lines`)."""

    parsed_rows: int
    malformed_lines: int

    @property
    def input_rows(self) -> int:
        return self.parsed_rows + self.malformed_lines


def load_raw(con: duckdb.DuckDBPyConnection, contract: SourceContract, files: list[Path]) -> RawInput:
    """Create `raw_input` and `malformed_lines` in the session from the source's files (none: no rows)."""
    if not files:
        _load_nothing(con, contract)
        return RawInput(parsed_rows=0, malformed_lines=0)
    present = [_check_columns(con, contract, path) for path in files]
    if files[0].suffix == ".csv":
        _load_csv(con, contract, files, present)
    else:
        _load_parquet(con, contract, files, set().union(*present))
    (parsed,) = run(con, f"SELECT count(*) FROM {RAW_INPUT}")[0]
    (malformed,) = run(con, f"SELECT count(*) FROM {MALFORMED_LINES}")[0]
    return RawInput(parsed_rows=int(parsed), malformed_lines=int(malformed))


def _csv_header(path: Path) -> list[str]:
    """The column names on a CSV file's first line (read with Python's csv module: no type sniffing)."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as handle:
        return [name.strip() for name in next(csv.reader(handle), [])]


def _csv_reader(path: Path) -> str:
    """read_csv with the header's columns given, so DuckDB does not sniff (a malformed line can fail a sniff)."""
    columns = "{" + ", ".join(f"{_quote(name)}: 'VARCHAR'" for name in _csv_header(path)) + "}"
    return f"read_csv({_quote(str(path))}, columns = {columns}, {_CSV_OPTIONS})"


def check_location(location: Path) -> None:
    """Fail with one line unless every source of the location has usable files (a header with its columns).

    A location is ingested whole or not at all: a broken file of one source stops the ingest of every source,
    so no table is rebuilt from a directory that is partly unusable.
    """
    from recopipeline.lib.contract import SOURCES
    from recopipeline.lib.sources import source_files

    con = duckdb.connect()
    try:
        for contract in SOURCES.values():
            for path in source_files(location, contract):
                _check_columns(con, contract, path)
    finally:
        con.close()


def raw_types(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """The type of each column of `raw_input` as read (VARCHAR for CSV, the file's types for Parquet)."""
    return {str(row[0]).lower(): str(row[1]) for row in run(con, f"DESCRIBE {RAW_INPUT}")}


def event_time_span(
    files: list[Path], contract: SourceContract, before: datetime | None = None
) -> tuple[datetime, datetime] | None:
    """The first and last event time in a source's files (those before `before`), read as the ingest reads them.

    Values that are not timestamps are left out, and so are times from `before` on (the ingest quarantines
    future ones with every run); an unusable file is a `SourceError`, never a shorter span.
    """
    if not files or contract.event_time is None:
        return None
    con = duckdb.connect()
    try:
        run(con, "SET TimeZone = 'UTC'")
        if files[0].suffix == ".csv":  # the ingest's read, aggregated as it streams (no copy of the rows)
            present = [_check_columns(con, contract, path) for path in files]
            selects = [f"SELECT {_columns(contract, kept)} FROM {_csv_reader(path)}" for path, kept in zip(files, present)]
            run(con, f"CREATE TEMP VIEW {RAW_INPUT} AS {' UNION ALL '.join(selects)}")
        else:
            load_raw(con, contract, files)
        moment = typed_value(contract, contract.event_time, raw_types(con))
        bound = f"WHERE t < TIMESTAMP '{before:%Y-%m-%d %H:%M:%S}'" if before else ""
        (first, last) = run(con, f"SELECT min(t), max(t) FROM (SELECT {moment} AS t FROM {RAW_INPUT}) {bound}")[0]
    finally:
        con.close()
    return None if first is None else (first, last)


def _check_columns(con: duckdb.DuckDBPyConnection, contract: SourceContract, path: Path) -> set[str]:
    """The contract columns a file has; fails with one line when it is empty, unreadable or lacks a required one."""
    if path.stat().st_size == 0:
        raise SourceError(f"source file {path} is empty (0 bytes); a file needs at least its header")
    try:
        if path.suffix == ".csv":
            header = [name.lower() for name in _csv_header(path)]
            unusable = [name for name in header if not name or header.count(name) > 1]
            if unusable:
                names = ", ".join(sorted({repr(name) for name in unusable}))
                raise SourceError(f"source file {path} has an empty or repeated column name in its header ({names})")
            present = set(header)
        else:
            described = run(con, f"DESCRIBE SELECT * FROM read_parquet({_quote(str(path))})")
            present = {str(row[0]).lower() for row in described}
    except (duckdb.Error, csv.Error, UnicodeError) as error:
        raise SourceError(f"cannot read source file {path}: {str(error).strip().splitlines()[0]}") from None
    missing = [c.name for c in contract.columns if c.name not in present and not c.nullable]
    if missing:
        raise SourceError(f"source file {path} lacks contract column(s) {', '.join(missing)}")
    return {name for name in contract.column_names if name in present}


def _columns(contract: SourceContract, present: set[str]) -> str:
    """The contract's columns in order; an optional column the files lack is NULL."""
    return ", ".join(name if name in present else f"NULL::VARCHAR AS {name}" for name in contract.column_names)


def _load_csv(
    con: duckdb.DuckDBPyConnection, contract: SourceContract, files: list[Path], present: list[set[str]]
) -> None:
    """Read each CSV file on its own (reject tables do not work with union_by_name), in file order."""
    for index, path in enumerate(files):
        columns = _columns(contract, present[index])
        # row_number() OVER () numbers the rows in file order (the window keeps the scan's order)
        select = (
            f"SELECT {columns}, {_quote(str(path))} AS _file, row_number() OVER () AS _row "
            f"FROM {_csv_reader(path)}"
        )
        if index == 0:
            run(con, f"CREATE TEMP TABLE {RAW_INPUT} AS {select}")
        else:
            run(con, f"INSERT INTO {RAW_INPUT} {select}")
    # One row per rejected line (a line may have several errors); the scan table names the file.
    run(
        con,
        f"""
        CREATE TEMP TABLE {MALFORMED_LINES} AS
        SELECT s.file_path AS _file,
               e.line,
               any_value(e.csv_line) AS csv_line,
               string_agg(e.error_type || ': ' || e.error_message, '; ' ORDER BY e.column_idx) AS error
        FROM reject_errors AS e
        JOIN reject_scans AS s USING (scan_id, file_id)
        GROUP BY s.file_path, e.line
        """,
    )
    spans = run(
        con,
        f"SELECT _file, line FROM {MALFORMED_LINES} "
        "WHERE contains(error, 'UNQUOTED VALUE') AND contains(csv_line, chr(10)) ORDER BY ALL LIMIT 1",
    )
    if spans:
        (path, line) = spans[0]
        raise SourceError(
            f"source file {path}: the record from line {line} runs over several lines (a quote that is never "
            "closed?); its lines cannot be told apart, so nothing of the file is ingested"
        )


def _load_parquet(
    con: duckdb.DuckDBPyConnection, contract: SourceContract, files: list[Path], present: set[str]
) -> None:
    """A view over the Parquet files (no copy, so scale l stays a streaming scan)."""
    paths = "[" + ", ".join(_quote(str(p)) for p in files) + "]"
    run(
        con,
        f"""
        CREATE TEMP VIEW {RAW_INPUT} AS
        SELECT {_columns(contract, present)}, filename AS _file, file_row_number + 1 AS _row
        FROM read_parquet({paths}, union_by_name = true, filename = true, file_row_number = true)
        """,
    )
    run(
        con,
        f"CREATE TEMP TABLE {MALFORMED_LINES} "
        "(_file VARCHAR, line BIGINT, csv_line VARCHAR, error VARCHAR)",
    )


def _load_nothing(con: duckdb.DuckDBPyConnection, contract: SourceContract) -> None:
    """An optional source without files: its columns as text, and no rows."""
    columns = ", ".join(f"{name} VARCHAR" for name in contract.column_names)
    run(con, f"CREATE TEMP TABLE {RAW_INPUT} ({columns}, _file VARCHAR, _row BIGINT)")
    run(con, f"CREATE TEMP TABLE {MALFORMED_LINES} (_file VARCHAR, line BIGINT, csv_line VARCHAR, error VARCHAR)")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
