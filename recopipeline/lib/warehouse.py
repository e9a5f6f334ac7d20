"""The warehouse: Parquet files under one storage root, computed by short-lived in-memory DuckDB sessions.

Layout: `<root>/<asset>/data.parquet` for an unpartitioned asset, `<root>/<asset>/<partition>.parquet` for a
partitioned one. Each step opens its own session (a cursor of the process's in-memory DuckDB, with views,
temporary tables and variables of its own), exposes its inputs as views named after the upstream assets, and
writes its output to a local temporary file that is then put in place whole (lib/storage.py: a rename on a local
root, one object PUT on object storage, `s3://…`). Readers therefore never see a half-written file and parallel
steps (processes) never share a database lock.

A step writes its asset as a *candidate* (`Warehouse.stage`): the new files go to a hidden folder inside the
asset's folder, the step's checks read the candidate, and only `publish()` moves the files into place. When a
blocking check fails the step calls `discard()` instead, so the files downstream assets read are always the last
ones that passed their audit (write, audit, publish). On object storage the candidate's files wait on local disk
and `publish()` uploads each one. Leftovers of a killed step are removed by the next step that writes the same
asset.

`<root>/catalog.duckdb` holds one view per asset so a person can open everything with the DuckDB CLI (on object
storage, a DuckDB with httpfs, or fsspec registered).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import duckdb
import pandas as pd

from recopipeline.lib.keys import DICTIONARIES, create_readable_views
from recopipeline.lib.storage import LOCAL, storage_for

SQL_DIR = Path(__file__).parents[1] / "sql"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_PARTITION = re.compile(r"^[A-Za-z0-9_\-:]+$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)\s*$", re.IGNORECASE)
_MEMORY_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
                 "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # as DuckDB reads them
MIN_SHARE_BYTES = 256 * 10**6  # a step's share of the memory limit is never below this


def load_sql(name: str) -> str:
    """The text of `recopipeline/sql/<name>.sql`."""
    return (SQL_DIR / f"{name}.sql").read_text()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_literal(value) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, pd.Timestamp) or hasattr(value, "isoformat"):
        return f"TIMESTAMP {_quote(pd.Timestamp(value).strftime('%Y-%m-%d %H:%M:%S.%f'))}"
    return _quote(str(value))


# zstd at its fastest level: written in about half the time of the default level, files 2–13 % larger
PARQUET = "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1"
CANDIDATE_PREFIX = ".candidate-"
# A temporary file or candidate folder untouched for this long belongs to no live step (a writing step touches
# its files continuously; one writer per asset at a time is dagster.yaml's pools rule).
LEFTOVER_AGE_SECONDS = 3600


@dataclass
class Candidate:
    """A new version of one asset's files, written to a hidden folder and made current by `publish()`."""

    asset: str
    folder: str  # always local
    storage: object = field(default=LOCAL, repr=False)  # where the published files live
    staged: dict[str, str] = field(default_factory=dict)  # published path -> staged file
    removed: set[str] = field(default_factory=set)  # published paths the new version no longer has

    def path_for(self, target: str) -> str:
        self.removed.discard(target)
        self.staged[target] = f"{self.folder}/{os.path.basename(target)}"
        return self.staged[target]

    def remove(self, target: str) -> None:
        if target in self.staged:
            staged = self.staged.pop(target)
            if os.path.exists(staged):
                os.remove(staged)
        self.removed.add(target)

    def files(self, current: list[str]) -> list[str]:
        """The asset's files as the candidate has them: current ones not replaced or removed, then the new ones."""
        kept = [path for path in current if path not in self.staged and path not in self.removed]
        return sorted(kept + list(self.staged.values()))

    def publish(self) -> None:
        missing = [staged for staged in self.staged.values() if not os.path.exists(staged)]
        if missing:  # never publish part of a version
            raise RuntimeError(f"the new version of '{self.asset}' lost {len(missing)} file(s) before publishing")
        for target, staged in sorted(self.staged.items()):
            self.storage.put(staged, target)
        for target in sorted(self.removed):
            self.storage.remove(target)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.staged.clear()
        self.removed.clear()


_DATABASES: dict[tuple, duckdb.DuckDBPyConnection] = {}
_DATABASES_LOCK = threading.Lock()


def _cursor(memory_limit: str, threads: int, temp_directory: str, storage) -> duckdb.DuckDBPyConnection:
    """A cursor of this process's in-memory DuckDB for these settings (made on first use): opening a database
    costs about 20 ms, a cursor microseconds. The settings are the database's; each cursor has its own views,
    temporary tables, registered Arrow streams and variables, all gone when it closes."""
    key = (memory_limit, threads, temp_directory)
    os.makedirs(temp_directory, exist_ok=True)
    with _DATABASES_LOCK:
        database = _DATABASES.get(key)
        if database is None:
            database = duckdb.connect(":memory:")
            run(database, f"SET memory_limit = {_quote(memory_limit)}")
            run(database, f"SET threads = {threads}")
            run(database, f"SET temp_directory = {_quote(temp_directory)}")
            run(database, "SET preserve_insertion_order = false")
            run(database, "SET enable_progress_bar = false")
            _DATABASES[key] = database
        storage.register(database)
        return database.cursor()


def memory_bytes(limit: str) -> int:
    """A DuckDB memory limit ('3GB', '500 MiB') in bytes; ValueError if it is not one."""
    match = _MEMORY.match(limit)
    if not match:
        raise ValueError(f"invalid DuckDB memory limit {limit!r} (expected e.g. '3GB' or '512MiB')")
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2).upper()])


def _forget_databases() -> None:
    """In a forked child: the parent's databases are never used, nor freed (DuckDB's destructor would wait for
    worker threads the child does not have); the child opens its own."""
    global _DATABASES_LOCK
    for database in _DATABASES.values():
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(database))
    _DATABASES.clear()
    _DATABASES_LOCK = threading.Lock()  # another thread of the parent may have held it


os.register_at_fork(after_in_child=_forget_databases)


@dataclass(frozen=True)
class Warehouse:
    root: str
    memory_limit: str = "3GB"
    threads: int = 2
    temp_directory: str | None = None
    candidate: Candidate | None = field(default=None, compare=False, repr=False)

    @property
    def storage(self):
        """Where the files are (lib/storage.py): the local file system or an object store."""
        return storage_for(self.root)

    def share(self, memory_parts: int, thread_parts: int = 1) -> Warehouse:
        """This warehouse with a share of its DuckDB budget: 1/`memory_parts` of the memory limit (at least
        MIN_SHARE_BYTES, never more than the whole) and 1/`thread_parts` of the threads (at least one)."""
        whole = memory_bytes(self.memory_limit)
        memory = min(whole, max(MIN_SHARE_BYTES, whole // max(1, memory_parts)))
        threads = max(1, int(self.threads) // max(1, thread_parts))
        return replace(self, memory_limit=f"{memory // 10**6}MB", threads=threads)

    # ---- locations -------------------------------------------------------------------------------------
    def asset_dir(self, asset: str) -> str:
        _check_identifier(asset)
        return f"{self.root.rstrip('/')}/{asset}"

    def partition_path(self, asset: str, partition: str | None = None) -> str:
        if partition is None:
            return f"{self.asset_dir(asset)}/data.parquet"
        if not _PARTITION.match(partition):
            raise ValueError(f"invalid partition key {partition!r}")
        return f"{self.asset_dir(asset)}/{partition.replace(':', '')}.parquet"

    def scratch_dir(self, asset: str) -> str:
        """A local folder for the asset's files before they are put in place (`put_file`)."""
        return self.storage.scratch(self.asset_dir(asset))

    def files(self, asset: str) -> list[str]:
        """The Parquet files of an asset; the candidate's, for the asset being staged."""
        current = self.storage.glob(self.asset_dir(asset), ".parquet")
        return self.candidate.files(current) if self._staging(asset) else current

    def exists(self, asset: str) -> bool:
        """Whether the asset has files."""
        return bool(self.files(asset))

    def scan(self, asset: str) -> str:
        """A DuckDB table expression that reads every file of the asset (of its candidate, while staged)."""
        if self._staging(asset):
            files = self.files(asset)
            if not files:
                raise MissingAssetError(f"the new version of '{asset}' has no files")
            return f"read_parquet([{', '.join(_quote(f) for f in files)}], union_by_name = true)"
        return f"read_parquet({_quote(self.asset_dir(asset) + '/*.parquet')}, union_by_name = true)"

    # ---- write, audit, publish -------------------------------------------------------------------------
    def stage(self, asset: str) -> Warehouse:
        """This warehouse with `asset` written as a candidate: its writes are invisible until `publish()`."""
        scratch = self.scratch_dir(asset)
        remove_leftovers(scratch)
        candidate = Candidate(asset, f"{scratch}/{CANDIDATE_PREFIX}{uuid.uuid4().hex}", self.storage)
        os.makedirs(candidate.folder)
        return replace(self, candidate=candidate)

    def publish(self) -> None:
        """Make the staged asset's new files current (each file replaced atomically)."""
        if self.candidate is not None:
            self.candidate.publish()

    def discard(self) -> None:
        """Drop the staged asset's new files; the current ones stay."""
        if self.candidate is not None:
            self.candidate.discard()

    def _staging(self, asset: str) -> bool:
        return self.candidate is not None and self.candidate.asset == asset

    def put_file(self, asset: str, partition: str | None, local_file: str) -> None:
        """Make a finished local Parquet file the asset's (partition) file."""
        target = self.partition_path(asset, partition)
        if self._staging(asset):
            os.replace(local_file, self.candidate.path_for(target))
        else:
            self.storage.put(local_file, target)

    def remove_file(self, asset: str, partition: str | None) -> None:
        """Drop the asset's (partition) file, if it has one."""
        target = self.partition_path(asset, partition)
        if self._staging(asset):
            self.candidate.remove(target)
        else:
            self.storage.remove(target)

    # ---- computing -------------------------------------------------------------------------------------
    @contextmanager
    def session(
        self, inputs: Iterable[str] = (), variables: Mapping[str, object] | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB with each input asset as a view of the same name and `getvariable()` values."""
        temp = self.temp_directory or os.path.join(tempfile.gettempdir(), "recopipeline-duckdb")
        con = _cursor(self.memory_limit, int(self.threads), temp, self.storage)
        try:
            for name in inputs:
                if not self.exists(name):
                    raise MissingAssetError(f"upstream asset '{name}' has not been materialized under {self.root}")
                run(con, f"CREATE TEMP VIEW {name} AS SELECT * FROM {self.scan(name)}")
            for key, value in (variables or {}).items():
                _check_identifier(key)
                run(con, f"SET VARIABLE {key} = {_sql_literal(value)}")
            yield con
        finally:
            con.close()

    def write(
        self,
        con: duckdb.DuckDBPyConnection,
        asset: str,
        query: str,
        partition: str | None = None,
        order_by: str | None = None,
    ) -> int:
        """Write the query's rows as the asset's (partition) file, atomically; returns the row count."""
        ordered = f"SELECT * FROM ({query}) ORDER BY {order_by}" if order_by else query
        scratch = self.scratch_dir(asset)
        if not self._staging(asset):
            remove_leftovers(scratch)
        temp = f"{scratch}/.{uuid.uuid4().hex}.tmp"
        try:
            (count,) = run(con, f"COPY ({ordered}) TO {_quote(temp)} ({PARQUET})")[0]
            self.put_file(asset, partition, temp)
        finally:
            if os.path.exists(temp):
                os.remove(temp)
        return int(count)

    def read(self, query: str, inputs: Iterable[str] = (), params: Mapping[str, object] | None = None) -> pd.DataFrame:
        """Run a query over the named assets and return a DataFrame (for metadata, tests and the CLI)."""
        with self.session(inputs) as con:
            return con.execute(query, params).df() if params else con.sql(query).df()

    # ---- catalog ---------------------------------------------------------------------------------------
    @property
    def catalog_path(self) -> str:
        return f"{self.root.rstrip('/')}/catalog.duckdb"

    def assets(self) -> list[str]:
        names = self.storage.folders(self.root)
        return [name for name in names if _IDENTIFIER.match(name) and self.files(name)]

    def refresh_catalog(self, changed: Iterable[str] | None = None) -> str:
        """Bring `catalog.duckdb` up to date, one view per materialized asset; put in place whole.

        A view reads its asset's folder, so it stays current as the files change: only the views of the `changed`
        assets, of assets new to the catalog and of assets gone from it are made again (every view for `None`, a
        missing catalog or a new key dictionary). A table that stores integer keys shows each key's id next to it
        (lib/keys.py).
        """
        scratch = self.storage.scratch(self.root)
        remove_leftovers(scratch, prefix="catalog.duckdb.")
        temp = f"{scratch}/catalog.duckdb.{uuid.uuid4().hex}.tmp"
        if changed is not None and self.storage.exists(self.catalog_path):
            self.storage.get(self.catalog_path, temp)
        con = duckdb.connect(temp)
        try:
            self.storage.register(con)
            names = self.assets()
            present = {row[0] for row in run(con, "SELECT view_name FROM duckdb_views() WHERE NOT internal")}
            for gone in sorted(present - set(names)):
                run(con, f"DROP VIEW {gone}")
            dictionaries = [d.table for d in DICTIONARIES if d.table in names]
            stale = set(names) - present
            if changed is None or stale & set(dictionaries):
                stale = set(names)
            stale |= set(changed or ()) & set(names)
            create_readable_views(con, {name: self.scan(name) for name in stale}, dictionaries)
        finally:
            con.close()
        self.storage.put(temp, self.catalog_path)
        if os.path.exists(temp + ".wal"):
            os.remove(temp + ".wal")
        return self.catalog_path

    def query_catalog(self, query: str) -> pd.DataFrame:
        """Run a query against the read-only catalog."""
        if not self.storage.exists(self.catalog_path):
            self.refresh_catalog()
        local = self.catalog_path
        if self.storage.remote:
            local = f"{self.storage.scratch(self.root)}/catalog.duckdb.{uuid.uuid4().hex}.read"
            self.storage.get(self.catalog_path, local)
        con = duckdb.connect(local, read_only=True)
        try:
            self.storage.register(con)
            return con.sql(query).df()
        finally:
            con.close()
            if local != self.catalog_path:
                os.remove(local)


def remove_leftovers(folder: str, older_than: float = LEFTOVER_AGE_SECONDS, prefix: str = ".") -> None:
    """Remove the temporary files and candidate folders a killed step left in a folder (names from `prefix`).

    Steps of other assets may clean the same folder at the same time: a file that is already gone is skipped.
    """
    if not os.path.isdir(folder):
        return
    cutoff = time.time() - older_than
    for entry in os.scandir(folder):
        if not entry.name.startswith(prefix) or entry.name == "catalog.duckdb":
            continue
        try:
            if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.remove(entry.path)
        except FileNotFoundError:
            continue


class MissingAssetError(RuntimeError):
    """An upstream asset has no data yet."""


def run(con: duckdb.DuckDBPyConnection, sql: str, params=None) -> list[tuple]:
    """Execute a statement and fetch its result to the end (DuckDB 2 results hold the connection until then)."""
    return con.execute(sql, params).fetchall() if params is not None else con.execute(sql).fetchall()


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid name {name!r}")
