"""Read-only SQL over the warehouse: `recopipeline sql`.

A query runs in a fresh in-memory DuckDB that has one view per asset (with the ids next to the integer keys,
as in the catalog) and can touch no other file: external
access is off except for the assets' Parquet files, extensions cannot be installed or loaded, and the
configuration is locked. Only one SELECT (or EXPLAIN of a SELECT) is run; anything that could write (COPY,
ATTACH, CREATE, INSTALL, SET, …) is refused before DuckDB sees it.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence

import duckdb
import pandas as pd

from recopipeline.lib.keys import DICTIONARIES, create_readable_views
from recopipeline.lib.storage import LOCAL, is_remote
from recopipeline.lib.warehouse import Warehouse, run

_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?:ANALY[SZ]E\s+)?", re.IGNORECASE)
_FIRST_WORD = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*(\w+)", re.DOTALL)
READ_ONLY = "recopipeline sql only reads: one SELECT, or EXPLAIN of one"


class RefusedQuery(ValueError):
    """The query is not a single read-only statement."""


def check_read_only(query: str) -> str:
    """The query's single statement if it only reads (SELECT, or EXPLAIN [ANALYZE] of a SELECT)."""
    statements = duckdb.extract_statements(query)
    if len(statements) != 1:
        raise RefusedQuery(f"{len(statements)} statements given; {READ_ONLY}")
    (statement,) = statements
    if statement.type == duckdb.StatementType.EXPLAIN:
        inner = _EXPLAIN.sub("", statement.query, count=1)
        explained = duckdb.extract_statements(inner) if inner != statement.query else []
        if len(explained) != 1 or explained[0].type != duckdb.StatementType.SELECT:
            raise RefusedQuery(f"EXPLAIN of anything but a SELECT is refused; {READ_ONLY}")
    elif statement.type != duckdb.StatementType.SELECT:
        raise RefusedQuery(f"{_keyword(statement)} statements are refused; {READ_ONLY}")
    return statement.query


def asset_files(store: Warehouse) -> dict[str, list[str]]:
    """Every materialized asset and its Parquet files (objects, on object storage)."""
    if is_remote(store.root):
        return {name: store.files(name) for name in store.assets()}
    return {name: [os.path.realpath(path) for path in store.files(name)] for name in store.assets()}


def query(store: Warehouse, sql: str) -> pd.DataFrame:
    """Run one read-only query over the warehouse's assets (one view each) and return its rows."""
    statement = check_read_only(sql)
    con = connect(asset_files(store), store.memory_limit, store.threads, store.storage)
    try:
        return con.execute(statement).df()
    finally:
        con.close()


def connect(assets: Mapping[str, Sequence[str]], memory_limit: str = "3GB", threads: int = 2, storage=LOCAL):
    """An in-memory DuckDB with a view per asset over exactly its files, locked so it can reach nothing else
    (on object storage too: the allowed paths hold for the registered file system)."""
    con = duckdb.connect(":memory:")
    try:
        storage.register(con)
        temp = os.path.join(tempfile.gettempdir(), "recopipeline-duckdb")
        os.makedirs(temp, exist_ok=True)
        run(con, f"SET memory_limit = {_quote(memory_limit)}")
        run(con, f"SET threads = {int(threads)}")
        run(con, f"SET temp_directory = {_quote(temp)}")
        run(con, "SET enable_progress_bar = false")
        run(con, "SET autoinstall_known_extensions = false")
        run(con, "SET autoload_known_extensions = false")
        paths = [path for files in assets.values() for path in files]
        # a table of keys shows each key's id next to it, as the catalog does
        create_readable_views(
            con,
            {name: f"read_parquet({_list(files)}, union_by_name = true)" for name, files in assets.items()},
            [d.table for d in DICTIONARIES if d.table in assets],
        )
        run(con, f"SET allowed_paths = {_list(paths)}")
        run(con, "SET enable_external_access = false")
        run(con, "SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def _keyword(statement) -> str:
    match = _FIRST_WORD.match(statement.query)
    return match.group(1).upper() if match else statement.type.name


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _list(items: Sequence[str]) -> str:
    return "[" + ", ".join(_quote(item) for item in items) + "]"
