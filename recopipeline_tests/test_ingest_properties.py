"""Property: for any mix of valid and broken rows, ingest loses nothing and lets nothing broken through.

Hypothesis writes contract files (CSV with BOMs, CRLF, quoted newlines, truncated and overlong lines, timezone
offsets; Parquet as text or with the file's own types, numeric ids and TIMESTAMPTZ) whose rows are valid or
broken in one known way, then ingests them as a run does. For every source: input rows = accepted +
quarantined, the accepted keys are exactly the valid rows' keys, and each broken row is quarantined with the
reason it was broken for. The CI profile (CI=true) generates more than 10,000 rows in all.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recopipeline.defs.partitions import first_hour
from recopipeline.lib.contract import (
    CART_STATUSES,
    INTERACTION_TYPES,
    REQUIRED_SOURCES,
    SOURCES,
    Column,
    SourceContract,
)
from recopipeline.lib.source_ingest import ingest_source_files, source_references
from recopipeline.lib.tuning import Tuning
from recopipeline.lib.warehouse import Warehouse
from recopipeline_tests.conftest import put, rows

IN_CI = os.environ.get("CI", "").lower() == "true"
EXAMPLES = 26 if IN_CI else 4  # per source and format: 10 x 26 x >= 40 rows > 10,000 rows in CI
MIN_ROWS = 40 if IN_CI else 10
settings.register_profile(
    "ingest", max_examples=EXAMPLES, deadline=None, derandomize=not IN_CI,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

KNOWN = 5  # customers 1..5 and products 1..5 exist; events may name others
START = first_hour() - timedelta(days=1)  # events fall in the history and in the first 6 hourly partitions
WINDOW = (first_hour(), first_hour() + timedelta(hours=6))
TEXT = st.text(alphabet=st.sampled_from(list("abcXYZ09 ,;\"'\n\té€中")), min_size=1, max_size=12).map(
    lambda s: "v" + s.strip() + "w"  # never blank, never padded
)


@dataclass
class Row:
    values: dict[str, object]  # contract column -> value (None: missing)
    reason: str | None  # why it must be quarantined; None: valid
    key: tuple | None  # the key the row holds when it is valid


@dataclass(frozen=True)
class Style:
    fmt: str  # csv or parquet
    native: bool  # parquet: the file's own types (not text)
    numeric_ids: bool
    bom: bool
    crlf: bool


def ident(prefix: str, n: int, style: Style) -> str:
    return str(n) if style.numeric_ids else f"{prefix}{n}"


def valid_value(draw, contract: SourceContract, column: Column, style: Style, serial: int) -> object:
    name = column.name
    if name in contract.key and name not in ("customer_id", "product_id"):
        return ident(name[0].upper(), serial, style)
    if name in ("customer_id", "product_id"):  # the reference sources' own key, or a known one in an event
        prefix = name[0].upper()
        return ident(prefix, serial if contract.key == (name,) else draw(st.integers(1, KNOWN)), style)
    if name == "interaction_type":
        return draw(st.sampled_from(INTERACTION_TYPES))
    if name == "cart_status":
        return draw(st.sampled_from(CART_STATUSES))
    if column.type == "VARCHAR":
        return draw(TEXT) if not column.nullable else draw(st.one_of(st.none(), TEXT))
    if column.type == "TIMESTAMP":
        moment = START + timedelta(minutes=draw(st.integers(0, 30 * 60 - 1)))
        return None if column.nullable and draw(st.booleans()) and name != contract.event_time else moment
    if column.type == "INTEGER":
        return draw(st.integers(1 if name == "quantity" else 0, 1000))
    if column.type == "DOUBLE":
        return draw(st.integers(0, 100_000)) / 100
    if column.type == "BOOLEAN":
        return draw(st.booleans())
    raise AssertionError(column.type)


def breakages(contract: SourceContract, style: Style) -> list[tuple[str, str | None]]:
    """(reason, column) pairs a row of this source can be broken by in this file style."""
    found: list[tuple[str, str | None]] = [("duplicate_key", None)]
    for c in contract.columns:
        if not c.nullable:
            found.append(("missing_value", c.name))
        if c.max_length is not None:
            found.append(("value_too_long", c.name))
        if c.type == "TIMESTAMP":
            found.append(("future_timestamp", c.name))
        if c.type == "INTEGER" or (not style.native and c.type != "VARCHAR"):
            found.append(("wrong_type", c.name))
    for name, reason in (("interaction_type", "unknown_interaction_type"), ("cart_status", "unknown_cart_status"),
                         ("price", "negative_price"), ("stock_quantity", "negative_stock_quantity"),
                         ("line_value", "negative_line_value"), ("quantity", "non_positive_quantity")):
        if name in contract.column_names:
            found.append((reason, name))
    if contract.event_time is not None:
        found += [("unknown_customer", "customer_id"), ("unknown_product", "product_id")]
    if style.fmt == "csv":
        found.append(("malformed_line", None))
    return found


def broken_value(reason: str, column: Column, style: Style) -> object:
    if reason == "missing_value":
        return None
    if reason == "value_too_long":
        return "x" * (column.max_length + 1)
    if reason == "future_timestamp":
        return datetime(2099, 1, 1)
    if reason == "wrong_type":
        if column.type == "INTEGER":
            return 30.5
        return {"TIMESTAMP": "2026-13-45 10:00:00", "DOUBLE": "cheap", "BOOLEAN": "maybe"}[column.type]
    if reason.startswith("unknown_") and column.name in ("interaction_type", "cart_status"):
        return "teleported"
    if reason == "unknown_customer":
        return ident("C", 999, style)
    if reason == "unknown_product":
        return ident("P", 999, style)
    return 0 if reason == "non_positive_quantity" else -1


@st.composite
def source_rows(draw, contract: SourceContract, style: Style) -> list[Row]:
    count = draw(st.integers(MIN_ROWS, MIN_ROWS + 30))
    options = breakages(contract, style)
    made: list[Row] = []
    for serial in range(1, count + 1):
        values = {c.name: valid_value(draw, contract, c, style, serial) for c in contract.columns}
        reason, column = draw(st.one_of(st.just((None, None)), st.just((None, None)), st.sampled_from(options)))
        valid_keys = [r for r in made if r.reason is None]
        if reason == "duplicate_key":
            if not valid_keys:
                reason = None
            else:
                earlier = draw(st.sampled_from(valid_keys))
                values.update(zip(contract.key, earlier.key))
        elif reason is not None and column is not None:
            values[column] = broken_value(reason, contract.column(column), style)
        key = tuple(values[k] for k in contract.key)
        if reason is None and any(k == key for k in (r.key for r in valid_keys)):
            continue  # a valid row must hold a key of its own
        made.append(Row(values, reason, key if reason is None else None))
    if style.fmt == "csv" and draw(st.booleans()):
        made.append(Row(dict(made[-1].values), "truncated", None))  # the file ends in the middle of a line
    return made


def csv_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write_csv(path, contract: SourceContract, made: list[Row], style: Style, draw) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if style.crlf else "\n")
    writer.writerow(contract.column_names)
    for row in made:
        cells = []
        for c in contract.columns:
            value = row.values[c.name]
            if c.type == "TIMESTAMP" and isinstance(value, datetime) and value.year < 2099 and draw(st.booleans()):
                # the same moment with an offset: 02:00 east of UTC
                cells.append((value + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S+02:00"))
            else:
                cells.append(csv_text(value))
        if row.reason == "malformed_line":
            cells.append("surplus")
        if row.reason == "truncated":  # the key and the start of the next field, with no line end
            out.write(f"{cells[0]},tru")
            break
        writer.writerow(cells)
    text = out.getvalue()
    path.write_bytes(("\ufeff" if style.bom else "").encode() + text.encode())


def write_parquet(path, contract: SourceContract, made: list[Row], style: Style) -> None:
    arrays, fields = [], []
    for c in contract.columns:
        values = [row.values[c.name] for row in made]
        if not style.native:
            arrays.append(pa.array([None if v is None else csv_text(v) for v in values], pa.string()))
        elif c.name in ("customer_id", "product_id") + contract.key and style.numeric_ids and c.type == "VARCHAR" \
                and all(v is None or str(v).isdigit() for v in values):
            arrays.append(pa.array([None if v is None else int(v) for v in values], pa.int64()))
        elif c.type == "TIMESTAMP":
            moments = [v.replace(tzinfo=timezone.utc) if isinstance(v, datetime) else v for v in values]
            arrays.append(pa.array(moments, pa.timestamp("us", tz="UTC")))
        elif c.type == "INTEGER":
            fractional = any(isinstance(v, float) for v in values)
            arrays.append(pa.array(values, pa.float64() if fractional else pa.int32()))
        else:
            arrays.append(pa.array(values, {"VARCHAR": pa.string(), "DOUBLE": pa.float64(),
                                            "BOOLEAN": pa.bool_()}[c.type]))
        fields.append(c.name)
    pq.write_table(pa.Table.from_arrays(arrays, names=fields), path)


def reference_tables(store: Warehouse, style: Style) -> None:
    put(store, "customers", rows("customers", [{"customer_id": ident("C", n, style)} for n in range(1, KNOWN + 1)]))
    put(store, "products", rows("products", [
        {"product_id": ident("P", n, style), "product_name": "p", "category": "c", "price": 1.0}
        for n in range(1, KNOWN + 1)
    ]))


# the shop's data; the merchandising rules' own rules (an action's value, a pin's one product, the window) are
# hand-computed in test_merchandising.py
CASES = [(name, fmt) for name in REQUIRED_SOURCES for fmt in ("csv", "parquet")]


@pytest.mark.parametrize(("source", "fmt"), CASES, ids=[f"{s}-{f}" for s, f in CASES])
@settings(settings.get_profile("ingest"))
@given(data=st.data())
def test_ingest_loses_nothing_and_accepts_only_valid_rows(tmp_path, source, fmt, data):
    contract = SOURCES[source]
    style = Style(
        fmt=fmt,
        native=fmt == "parquet" and data.draw(st.booleans(), "native"),
        numeric_ids=data.draw(st.booleans(), "numeric ids"),
        bom=fmt == "csv" and data.draw(st.booleans(), "bom"),
        crlf=fmt == "csv" and data.draw(st.booleans(), "crlf"),
    )
    made = data.draw(source_rows(contract, style), "rows")
    root = tmp_path / uuid.uuid4().hex
    folder = root / "input"
    folder.mkdir(parents=True)
    path = folder / f"{source}.{fmt}"
    if fmt == "csv":
        write_csv(path, contract, made, style, data.draw)
    else:
        write_parquet(path, contract, made, style)
    store = Warehouse(str(root / "warehouse"), memory_limit="1GB", threads=2)
    if source_references(contract):
        reference_tables(store, style)
    window = WINDOW if contract.event_time is not None else None
    counts = ingest_source_files(store, contract, [path], Tuning(), "property", window, first_hour())

    accepted = store.read(f"SELECT {', '.join(contract.key)} FROM {source}", inputs=[source])
    held = store.read("SELECT reason FROM quarantine WHERE source = $s", inputs=["quarantine"], params={"s": source})
    assert counts.input_rows == len(made)
    assert len(accepted) + len(held) == len(made)  # input rows = accepted + quarantined
    accepted_keys = sorted(tuple(str(v) for v in key) for key in accepted.itertuples(index=False))
    valid_keys = sorted(tuple(str(v) for v in row.key) for row in made if row.reason is None)
    assert accepted_keys == valid_keys  # every valid row accepted, nothing else
    expected = Counter("malformed_line" if r.reason == "truncated" else r.reason for r in made if r.reason)
    assert Counter(held.reason) == expected
