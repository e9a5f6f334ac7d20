"""Write–audit–publish into the serving database, hourly per-customer replacement, rollback and expiry.

A full publication writes its rows under a new version number (staging: no reader looks at that version),
audits them against the counts the warehouse expects, and then switches the `serving_state` pointer in one
short transaction. Readers join the pointer in every read, so they see the old version or the new one, never a
mix and never nothing. A failure at any point before the switch leaves the old version served; the staged rows
are removed (or, after a killed process, by the next publish). The last `keep_versions` versions are kept for
`rollback`.

A customers publication (the hourly refresh) replaces the rows of the given customers inside the live version,
in one transaction, and bumps the revision so caches refresh. A rollback returns to the previous full version,
without the hourly replacements made since.
"""

from __future__ import annotations

import csv
import io
import json
import operator
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Table, and_, delete, func, insert, select, update
from sqlalchemy.exc import DBAPIError

from recopipeline.serving.database import ServingDatabase, ServingError, utcnow
from recopipeline.serving.schema import (
    COLD_START,
    LISTS,
    customer_placement_lists,
    customer_recommendations,
    customer_segments,
    placement_rules,
    product_relations,
    publications,
    serving_state,
)

CUSTOMER_COLUMNS = (
    "customer_id", "variant", "rank", "product_id", "product_name", "recommendation_type", "score", "evidence",
)
RELATION_COLUMNS = ("product_id", "relation", "rank", "related_product_id", "related_product_name", "score")
PLACEMENT_COLUMNS = ("customer_id", "placement", "rank", "product_id", "product_name", "score", "evidence")
RULE_COLUMNS = (
    "placement", "rule_id", "product_id", "product_name", "action", "value", "priority", "valid_from", "valid_to",
    "customer_segment",
)
SEGMENT_COLUMNS = ("customer_id", "customer_segment")
COLUMNS = {  # the columns a publication stages per table (besides version and generated_at)
    customer_recommendations.name: CUSTOMER_COLUMNS,
    product_relations.name: RELATION_COLUMNS,
    customer_placement_lists.name: PLACEMENT_COLUMNS,
    placement_rules.name: RULE_COLUMNS,
    customer_segments.name: SEGMENT_COLUMNS,
}
VERSIONED = (customer_recommendations, product_relations, customer_placement_lists, placement_rules, customer_segments)
# batches of rows; a row maps the columns above to values, or lists the values in the columns' order
Rows = Iterable[Sequence[Mapping[str, object] | Sequence]]


class PublishError(ServingError):
    """A publication was refused or failed; what was served before is still served."""


@dataclass(frozen=True)
class Expected:
    """What the warehouse says a complete publication holds (cold-start rows are counted apart)."""

    customer_rows: int
    customers: int
    relation_rows: int
    variants: tuple[str, ...]
    placement_rows: int = 0  # recently_viewed and buy_it_again rows
    rule_rows: int = 0  # placement_rules rows
    segment_rows: int = 0  # customer_segments rows


@dataclass
class Publication:
    version: int
    revision: int
    customer_rows: int
    customers: int
    relation_rows: int
    checks: dict[str, dict] = field(default_factory=dict)
    expired: list[int] = field(default_factory=list)
    seconds: float = 0.0


@dataclass(frozen=True)
class ServingState:
    version: int
    revision: int
    updated_at: datetime


def current_state(conn: Connection) -> ServingState | None:
    row = conn.execute(
        select(serving_state.c.current_version, serving_state.c.revision, serving_state.c.updated_at)
        .where(serving_state.c.id == 1)
    ).first()
    return ServingState(*row) if row else None


def publish(
    db: ServingDatabase,
    customer_batches: Rows,
    relation_batches: Rows,
    expected: Expected,
    *,
    placement_batches: Rows = (),
    rule_batches: Rows = (),
    segment_batches: Rows = (),
    run_id: str | None = None,
    experiment: str | None = None,
    keep_versions: int = 3,
    max_shrink: float = 0.5,
    generated_at: datetime | None = None,
) -> Publication:
    """Stage, audit and switch to a new version. Each table's batches are read to the end before the next's
    (customers, relations, placement lists, placement rules).

    `max_shrink`: refuse a version with fewer customer rows than (1 - max_shrink) x the live version's.
    """
    if keep_versions < 1:
        raise ValueError("keep_versions must be >= 1")
    started = time.perf_counter()
    generated_at = generated_at or utcnow()
    with db.publish_lock() as conn:
        _remove_abandoned(conn)
        version = _open(conn, run_id, experiment)
        try:
            _stage(conn, db, customer_recommendations, customer_batches, version, generated_at)
            _stage(conn, db, product_relations, relation_batches, version, None)
            _stage(conn, db, customer_placement_lists, placement_batches, version, generated_at)
            _stage(conn, db, placement_rules, rule_batches, version, None)
            _stage(conn, db, customer_segments, segment_batches, version, None)
            checks, counts = _audit(conn, version, expected, max_shrink)
            failed = [
                f"{name} (expected {check['expected']}, got {check['actual']})"
                for name, check in checks.items() if not check["passed"]
            ]
            if failed:
                raise PublishError(f"version {version} failed its audit: {'; '.join(failed)}")
            revision = _switch(conn, version, checks, counts)
        except BaseException as error:
            _abandon(conn, version, error)
            raise
        expired = _expire(conn, keep_versions)
    return Publication(
        version=version,
        revision=revision,
        customer_rows=counts["customer_rows"],
        customers=counts["customers"],
        relation_rows=counts["relation_rows"],
        checks=checks,
        expired=expired,
        seconds=time.perf_counter() - started,
    )


def publish_customers(
    db: ServingDatabase,
    rows: Sequence[Mapping[str, object]],
    customers: Iterable[str],
    *,
    placement_rows: Sequence[Mapping[str, object]] = (),
    placement_customers: Iterable[str] = (),
    unavailable: Iterable[str] = (),
    run_id: str | None = None,
    generated_at: datetime | None = None,
) -> Publication:
    """Replace the rows of `customers` in the live version, in one transaction (the hourly refresh), and the
    placement lists of `placement_customers` (customers of `customers` whose lists were recomputed) by
    `placement_rows` (a customer may have none: nothing viewed or bought). The `unavailable` products (sold out
    or withdrawn since) leave the live version's product lists and pins.

    Every listed customer must get at least one row, and no row may belong to a customer not listed.
    """
    started = time.perf_counter()
    touched = set(customers)
    given = {row["customer_id"] for row in rows}
    if not touched:
        raise PublishError("no customers to publish")
    if given - touched:
        raise PublishError(f"rows for customers that were not listed: {', '.join(sorted(given - touched)[:5])}")
    if touched - given:
        raise PublishError(f"customers without rows would be served nothing: {', '.join(sorted(touched - given)[:5])}")
    listed = set(placement_customers)
    stray = {row["customer_id"] for row in placement_rows} - listed
    if stray or listed - touched:
        raise PublishError(f"placement rows of customers not listed: {', '.join(sorted(stray | (listed - touched))[:5])}")
    generated_at = generated_at or utcnow()
    with db.publish_lock() as conn:
        state = current_state(conn)
        if state is None:
            raise PublishError("nothing is published yet: publish a full version first")
        try:
            _replace(conn, customer_recommendations, touched, rows, state.version, generated_at)
            _replace(conn, customer_placement_lists, listed, placement_rows, state.version, generated_at)
            _withdraw(conn, sorted(set(unavailable)), state.version)
            revision = state.revision + 1
            conn.execute(
                insert(publications).values(
                    kind="customers", version=state.version, revision=revision, status="applied", run_id=run_id,
                    customer_rows=len(rows), customers=len(touched), relation_rows=0, checks_passed=True,
                    created_at=generated_at, published_at=utcnow(),
                )
            )
            conn.execute(
                update(serving_state).where(serving_state.c.id == 1).values(revision=revision, updated_at=utcnow())
            )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return Publication(
        version=state.version, revision=revision, customer_rows=len(rows), customers=len(touched), relation_rows=0,
        seconds=time.perf_counter() - started,
    )


def _replace(
    conn: Connection, table: Table, customers: set[str], rows: Sequence[Mapping[str, object]], version: int,
    generated_at: datetime,
) -> None:
    """The rows of `customers` in `version` of the table replaced by `rows` (inside the caller's transaction)."""
    ordered = sorted(customers)
    for start in range(0, len(ordered), 10_000):  # SQLite caps the parameters of one statement
        conn.execute(
            delete(table).where(table.c.version == version, table.c.customer_id.in_(ordered[start : start + 10_000]))
        )
    if rows:
        conn.execute(insert(table), [_row(row, COLUMNS[table.name], version, generated_at) for row in rows])


def _withdraw(conn: Connection, products: list[str], version: int) -> None:
    """Products no longer available out of `version`'s product lists (similar, complementary, bought together)
    and pins (inside the caller's transaction)."""
    for start in range(0, len(products), 10_000):  # SQLite caps the parameters of one statement
        chunk = products[start : start + 10_000]
        conn.execute(delete(product_relations).where(
            product_relations.c.version == version, product_relations.c.related_product_id.in_(chunk)))
        conn.execute(delete(placement_rules).where(
            placement_rules.c.version == version, placement_rules.c.action == "pin",
            placement_rules.c.product_id.in_(chunk)))


def rollback(db: ServingDatabase) -> tuple[int, int]:
    """Serve the previous kept version again; returns (version before, version now)."""
    with db.publish_lock() as conn:
        state = current_state(conn)
        if state is None:
            raise PublishError("nothing is published yet")
        previous = conn.execute(
            select(func.max(publications.c.version)).where(
                publications.c.kind == "full",
                publications.c.status == "retired",
                publications.c.version < state.version,
            )
        ).scalar()
        if previous is None:
            raise PublishError(f"no earlier version is kept to roll back to (version {state.version} is live)")
        now = utcnow()
        conn.execute(_set_status(state.version, "rolled_back"))
        conn.execute(_set_status(previous, "live"))
        conn.execute(
            update(serving_state)
            .where(serving_state.c.id == 1)
            .values(current_version=previous, revision=state.revision + 1, updated_at=now)
        )
        conn.commit()
    return state.version, previous


def history(db: ServingDatabase, limit: int = 20) -> list[dict]:
    """The newest entries of the publication log."""
    with db.engine.connect() as conn:
        rows = conn.execute(select(publications).order_by(publications.c.publication_id.desc()).limit(limit))
        return [dict(row._mapping) for row in rows]


# ---- the steps of a full publication -----------------------------------------------------------------------
def _remove_abandoned(conn: Connection) -> None:
    """Staged rows of a publish that died (the lock is ours, so no live publish owns them)."""
    abandoned = conn.execute(
        select(publications.c.publication_id).where(publications.c.status == "staging")
    ).scalars().all()
    for version in abandoned:
        _delete_version(conn, version)
        conn.execute(
            update(publications)
            .where(publications.c.publication_id == version)
            .values(status="failed", message="abandoned: the publishing process stopped before the switch")
        )
        conn.commit()


def _open(conn: Connection, run_id: str | None, experiment: str | None) -> int:
    result = conn.execute(
        insert(publications).values(
            kind="full", status="staging", run_id=run_id, experiment=experiment, created_at=utcnow()
        )
    )
    version = int(result.inserted_primary_key[0])
    conn.execute(update(publications).where(publications.c.publication_id == version).values(version=version))
    conn.commit()
    return version


def _stage(
    conn: Connection, db: ServingDatabase, table: Table, batches: Rows, version: int, generated_at: datetime | None
) -> None:
    """Insert the batches under the new version, committing each (no reader looks at this version yet).

    Rows go in through the driver's bulk path (executemany on SQLite, COPY on Postgres) as they come, the version
    and the generation time added by the statement: at millions of rows, per-row work in Python would cost more
    than the database's own.
    """
    columns = COLUMNS[table.name]
    pick = operator.itemgetter(*columns)
    fixed = {"version": version} | ({"generated_at": generated_at.strftime("%Y-%m-%d %H:%M:%S.%f")}
                                    if generated_at else {})
    for batch in batches:
        if batch:
            rows = [pick(row) for row in batch] if isinstance(batch[0], Mapping) else batch
            if table is placement_rules:  # the only staged table with times of its own
                rows = [_text_times(row) for row in rows]
            _bulk_insert(conn, db, table, columns, rows, fixed)
            conn.commit()


def _text_times(values: Sequence) -> tuple:
    """Timestamps as the text both drivers' bulk paths take (SQLite has no time type of its own)."""
    return tuple(v.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v for v in values)


def _bulk_insert(
    conn: Connection, db: ServingDatabase, table: Table, names: Sequence[str], rows: Sequence[Sequence],
    fixed: Mapping[str, object],
) -> None:
    """Insert `rows` (values in the order of `names`), each with the `fixed` values (the same for every row)."""
    if not conn.in_transaction():
        conn.begin()
    qualified = f'"{db.schema}"."{table.name}"' if db.schema else f'"{table.name}"'
    if db.is_sqlite:  # the fixed values are literals of the statement, not parameters of each row
        values = [*(_literal(value) for value in fixed.values()), *("?" for _ in names)]
        statement = f"INSERT INTO {qualified} ({', '.join([*fixed, *names])}) VALUES ({', '.join(values)})"
        conn.exec_driver_sql(statement, rows)
        return
    buffer = io.StringIO()
    prefix = tuple(fixed.values())
    csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC).writerows(prefix + tuple(row) for row in rows)
    buffer.seek(0)  # None is unquoted: NULL; '' stays ''
    statement = f"COPY {qualified} ({', '.join([*fixed, *names])}) FROM STDIN WITH (FORMAT csv)"
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(statement, buffer)
    except conn.dialect.loaded_dbapi.Error as error:  # raise it as SQLAlchemy would (IntegrityError, ...)
        dbapi_error = conn.dialect.loaded_dbapi.Error
        raise DBAPIError.instance(statement, None, error, dbapi_error, dialect=conn.dialect) from None
    finally:
        cursor.close()


def _literal(value: int | str) -> str:
    """An integer or a text as an SQL literal."""
    return str(int(value)) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


def _row(row: Mapping[str, object], columns: Sequence[str], version: int, generated_at: datetime | None) -> dict:
    values = {name: row[name] for name in columns}
    values["version"] = version
    if generated_at is not None:
        values["generated_at"] = generated_at
    return values


def _audit(conn: Connection, version: int, expected: Expected, max_shrink: float) -> tuple[dict, dict]:
    cr = customer_recommendations
    rows, customers = conn.execute(
        select(func.count(), func.count(cr.c.customer_id.distinct())).where(
            cr.c.version == version, cr.c.customer_id.not_in(LISTS)
        )
    ).one()
    cold_start_variants = set(
        conn.execute(
            select(cr.c.variant).where(cr.c.version == version, cr.c.customer_id == COLD_START).distinct()
        ).scalars()
    )
    served_variants = set(
        conn.execute(select(cr.c.variant).where(cr.c.version == version).distinct()).scalars()
    )
    relation_rows, placement_rows, rule_rows, segment_rows = (
        conn.execute(select(func.count()).select_from(table).where(table.c.version == version)).scalar()
        for table in (product_relations, customer_placement_lists, placement_rules, customer_segments)
    )
    live_rows = conn.execute(
        select(publications.c.customer_rows).where(publications.c.status == "live", publications.c.kind == "full")
    ).scalar()
    floor = None if live_rows is None else int(live_rows * (1 - max_shrink))

    def check(passed: bool, expected_value, actual) -> dict:
        return {"passed": bool(passed), "expected": expected_value, "actual": actual}

    checks = {
        "not_empty": check(rows > 0 and customers > 0, "> 0 rows", rows),
        "customer_rows_match_warehouse": check(rows == expected.customer_rows, expected.customer_rows, rows),
        "customers_match_warehouse": check(customers == expected.customers, expected.customers, customers),
        "relation_rows_match_warehouse": check(
            relation_rows == expected.relation_rows, expected.relation_rows, relation_rows
        ),
        "placement_rows_match_warehouse": check(
            placement_rows == expected.placement_rows, expected.placement_rows, placement_rows
        ),
        "placement_rules_match_warehouse": check(rule_rows == expected.rule_rows, expected.rule_rows, rule_rows),
        "segments_match_warehouse": check(
            segment_rows == expected.segment_rows, expected.segment_rows, segment_rows
        ),
        "cold_start_list_per_variant": check(
            set(expected.variants) <= cold_start_variants, sorted(expected.variants), sorted(cold_start_variants)
        ),
        "only_configured_variants": check(
            served_variants <= set(expected.variants), sorted(expected.variants), sorted(served_variants)
        ),
        "no_sharp_shrink": check(floor is None or rows >= floor, f">= {floor}" if floor is not None else "-", rows),
    }
    counts = {"customer_rows": rows, "customers": customers, "relation_rows": relation_rows}
    return checks, counts


def _switch(conn: Connection, version: int, checks: dict, counts: dict) -> int:
    """The one transaction that makes the new version live."""
    state = conn.execute(
        select(serving_state.c.current_version, serving_state.c.revision)
        .where(serving_state.c.id == 1)
        .with_for_update()
    ).first()
    now = utcnow()
    if state is not None and state.current_version > version:
        raise PublishError(f"version {state.current_version} is already live; version {version} is older")
    conn.execute(
        update(publications)
        .where(publications.c.status == "live", publications.c.kind == "full")
        .values(status="retired")
    )
    conn.execute(
        update(publications)
        .where(publications.c.publication_id == version)
        .values(
            status="live", published_at=now, checks_passed=True, checks=json.dumps(checks),
            revision=(state.revision + 1) if state else 1, **counts,
        )
    )
    if state is None:
        conn.execute(insert(serving_state).values(id=1, current_version=version, revision=1, updated_at=now))
        revision = 1
    else:
        revision = state.revision + 1
        conn.execute(
            update(serving_state)
            .where(serving_state.c.id == 1)
            .values(current_version=version, revision=revision, updated_at=now)
        )
    conn.commit()
    return revision


def _abandon(conn: Connection, version: int, error: BaseException) -> None:
    """Remove a failed version's staged rows and log why; the live version is untouched."""
    try:
        conn.rollback()
        _delete_version(conn, version)
        conn.execute(
            update(publications)
            .where(publications.c.publication_id == version)
            .values(status="failed", checks_passed=False, message=str(error)[:2000] or type(error).__name__)
        )
        conn.commit()
    except Exception:  # the database itself is failing: the next publish removes the rows
        conn.rollback()


def _expire(conn: Connection, keep_versions: int) -> list[int]:
    """Delete the rows of versions beyond the newest `keep_versions` (live included) and of rolled-back ones."""
    kept = conn.execute(
        select(publications.c.version)
        .where(publications.c.kind == "full", publications.c.status.in_(["live", "retired"]))
        .order_by(publications.c.version.desc())
    ).scalars().all()
    retire = kept[keep_versions:]
    rolled_back = conn.execute(
        select(publications.c.version).where(
            publications.c.kind == "full", publications.c.status == "rolled_back", publications.c.message.is_(None)
        )
    ).scalars().all()
    for version in retire:
        _delete_version(conn, version)
        conn.execute(_set_status(version, "expired"))
        conn.commit()
    for version in rolled_back:
        _delete_version(conn, version)
        conn.execute(
            update(publications)
            .where(publications.c.publication_id == version)
            .values(message="rows removed after the rollback")
        )
        conn.commit()
    return list(retire) + list(rolled_back)


def _delete_version(conn: Connection, version: int) -> None:
    for table in VERSIONED:
        conn.execute(delete(table).where(table.c.version == version))


def _set_status(version: int, status: str):
    return (
        update(publications)
        .where(and_(publications.c.publication_id == version, publications.c.kind == "full"))
        .values(status=status)
    )
