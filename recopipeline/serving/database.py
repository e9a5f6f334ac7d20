"""The serving database: an engine for a SQLite file or Postgres, its tables, and the publish lock.

SQLite runs in WAL mode, so readers never wait for the (single) writer and see the last committed state.
Postgres may keep the tables in their own schema (`schema=`), mapped onto the same Core tables.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateIndex, CreateTable

from recopipeline.serving.schema import FEEDBACK_EVENTS, metadata, recommendation_feedback

FEEDBACK_EVENT_CHECK = "feedback_event"  # the name of recommendation_feedback's CHECK on its event column


class ServingError(RuntimeError):
    """The serving database cannot answer or cannot be changed as asked."""


def utcnow() -> datetime:
    """Naive UTC, like every timestamp the project stores."""
    return datetime.now(UTC).replace(tzinfo=None)


class ServingDatabase:
    """One serving database; safe to share between threads."""

    def __init__(self, url: str, schema: str | None = None, pool_size: int = 8):
        self.url = _with_installed_driver(make_url(url))
        self.schema = schema or None
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if not self.url.database or self.url.database == ":memory:":
                raise ServingError("the serving database must be a SQLite file or Postgres, not an in-memory SQLite")
            if self.schema:
                raise ServingError("a schema can only be given for Postgres")
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                self.url,
                connect_args={"timeout": 60, "check_same_thread": False},
                pool_size=pool_size,
                max_overflow=pool_size,
            )
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
            if self.schema:
                _create_schema(engine, self.schema)
                engine = engine.execution_options(schema_translate_map={None: self.schema})
        self.engine: Engine = engine
        self._create_tables()

    @property
    def backend(self) -> str:
        return "sqlite" if self.is_sqlite else self.url.get_backend_name()

    def describe(self) -> str:
        """The URL without its password, for logs and metadata."""
        shown = self.url.render_as_string(hide_password=True)
        return f"{shown} (schema {self.schema})" if self.schema else shown

    def _create_tables(self) -> None:
        try:
            metadata.create_all(self.engine)
        except DBAPIError:  # another process created them at the same moment
            metadata.create_all(self.engine)
        self._add_missing_columns()
        self._add_missing_indexes()
        self._allow_new_feedback_events()

    def _add_missing_indexes(self) -> None:
        """Indexes added to a table after a database was created with it (by a role that may create them)."""
        for table in metadata.sorted_tables:
            for index in table.indexes:
                try:
                    index.create(self.engine, checkfirst=True)
                except DBAPIError:  # a reader role, or another process at the same moment
                    pass

    def _add_missing_columns(self) -> None:
        """Columns added to a table after a database was created with it (nullable, so old rows stay valid)."""
        for table in metadata.sorted_tables:
            present = {column["name"] for column in inspect(self.engine).get_columns(table.name, schema=self.schema)}
            for column in table.columns:
                if column.name in present:
                    continue
                qualified = f'"{self.schema}"."{table.name}"' if self.schema else f'"{table.name}"'
                kind = column.type.compile(dialect=self.engine.dialect)
                try:
                    with self.engine.begin() as conn:
                        conn.exec_driver_sql(f'ALTER TABLE {qualified} ADD COLUMN "{column.name}" {kind}')
                except DBAPIError:  # another process added it at the same moment
                    pass

    def _allow_new_feedback_events(self) -> None:
        """Widen the CHECK on `recommendation_feedback.event` of a database created before an event existed.

        Postgres drops and re-adds the constraint (`NOT VALID`: the old rows hold fewer events, nothing to scan).
        SQLite cannot alter a constraint, so the table is rebuilt as SQLite's documentation describes (create the
        new table, copy the rows, drop the old one, rename the new one, in one `BEGIN IMMEDIATE` transaction; the
        feedback ids are kept). Both happen once, on the first open after the upgrade. A role that may not alter
        the table (a Postgres reader) leaves it as it is; recording a new event then fails until the owner opens
        the database.
        """
        checks = inspect(self.engine).get_check_constraints(recommendation_feedback.name, schema=self.schema)
        if all(_allows_every_event(c["sqltext"]) for c in checks if c["name"] == FEEDBACK_EVENT_CHECK):
            return
        try:
            if self.is_sqlite:
                _rebuild_sqlite_feedback(self.url.database, self.engine.dialect)
            else:
                name = recommendation_feedback.name
                qualified = f'"{self.schema}"."{name}"' if self.schema else f'"{name}"'
                allowed = ", ".join(f"'{e}'" for e in FEEDBACK_EVENTS)
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(
                        f"ALTER TABLE {qualified} DROP CONSTRAINT IF EXISTS {FEEDBACK_EVENT_CHECK}, "
                        f"ADD CONSTRAINT {FEEDBACK_EVENT_CHECK} CHECK (event IN ({allowed})) NOT VALID"
                    )
        except (DBAPIError, sqlite3.Error):  # not the owner, or another process is upgrading it at the same moment
            pass

    @contextmanager
    def publish_lock(self) -> Iterator[Connection]:
        """A connection that alone may change what is served: publishes, rollbacks and expiry are serialised.

        SQLite: an exclusive lock on `<database>.publish-lock`; Postgres: a session advisory lock. Both are
        released by the operating system or the server when the process dies, so a killed publish never
        blocks the next one.
        """
        with self.engine.connect() as conn:
            if self.is_sqlite:
                with open(f"{self.url.database}.publish-lock", "a+") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    try:
                        yield conn
                    finally:
                        conn.rollback()
                        fcntl.flock(handle, fcntl.LOCK_UN)
            else:
                key = _lock_key(self.schema or "public")
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                conn.commit()
                try:
                    yield conn
                finally:
                    conn.rollback()
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    conn.commit()

    def dispose(self) -> None:
        self.engine.dispose()


def _with_installed_driver(url: URL) -> URL:
    """`postgresql://` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 (our dependency) when psycopg is absent."""
    if url.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None:
        return url.set(drivername="postgresql+psycopg2")
    return url


def _allows_every_event(check_sql: str) -> bool:
    return all(f"'{e}'" in check_sql for e in FEEDBACK_EVENTS)


def _rebuild_sqlite_feedback(path: str, dialect) -> None:
    """Recreate `recommendation_feedback` with the current definition, keeping its rows, in one transaction."""
    table, new = recommendation_feedback.name, f"{recommendation_feedback.name}_upgraded"
    con = sqlite3.connect(path, timeout=60, isolation_level=None)  # autocommit: the transaction is ours
    try:
        con.execute("BEGIN IMMEDIATE")  # the write lock first; then no other process can upgrade alongside
        (current,) = con.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        if _allows_every_event(current):  # another process rebuilt it while we waited for the lock
            con.execute("ROLLBACK")
            return
        columns = ", ".join(f'"{row[1]}"' for row in con.execute(f'PRAGMA table_info("{table}")')
                            if row[1] in recommendation_feedback.columns)
        copy = recommendation_feedback.to_metadata(MetaData(), name=new)
        con.execute(str(CreateTable(copy).compile(dialect=dialect)))  # the table alone; indexes follow the rename
        con.execute(f'INSERT INTO "{new}" ({columns}) SELECT {columns} FROM "{table}"')
        con.execute(f'DROP TABLE "{table}"')  # and its indexes
        con.execute(f'ALTER TABLE "{new}" RENAME TO "{table}"')
        for index in recommendation_feedback.indexes:
            con.execute(str(CreateIndex(index).compile(dialect=dialect)))
        con.execute("COMMIT")
    except BaseException:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def _create_schema(engine: Engine, schema: str) -> None:
    """Create the schema if it is missing; only then is `CREATE` on the database needed (readers lack it)."""
    name = _identifier(schema)
    with engine.begin() as conn:
        if conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :name"), {"name": name}).first() is None:
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{name}"'))


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode = WAL")  # readers see the last commit while the writer works
    cursor.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe in WAL mode
    cursor.execute("PRAGMA busy_timeout = 60000")
    cursor.close()


def _lock_key(name: str) -> int:
    """A stable 63-bit advisory-lock key per schema."""
    return int(hashlib.sha256(f"recopipeline.publish:{name}".encode()).hexdigest()[:15], 16)


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name[0].isalpha():
        raise ServingError(f"invalid schema name {name!r}")
    return name

