"""Integer surrogate keys: every customer and product id is given one number, once, and keeps it.

The dictionaries `customer_keys` (customer_id, customer_key) and `product_keys` (product_id, product_key) are
tables of the warehouse that only grow. The customers and products ingests add the ids they have not seen
before, numbered after the largest key in id order (a fresh warehouse numbers its ids 1, 2, … in id order), and
give every accepted row its key; the event sources get their customer's and product's keys at ingest. An id that
leaves the source keeps its key, so it comes back with the same number; keys never change across runs or hourly
refreshes. The derived stages join, group and sort on these integers; the original ids stay in the sources and
come back where people read them (customer_top_recommendations, the serving tables, the catalog views).

A dictionary is written before the rows that use it and is never shrunk: keys given to the rows of an ingest
that later fails its checks stay reserved for those ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb

from recopipeline.lib.contract import SourceContract
from recopipeline.lib.warehouse import Warehouse, run


@dataclass(frozen=True)
class KeyDictionary:
    source: str  # the dimension source whose ids it numbers
    id_column: str
    key_column: str

    @property
    def table(self) -> str:
        return f"{self.key_column}s"


DICTIONARIES = (
    KeyDictionary("customers", "customer_id", "customer_key"),
    KeyDictionary("products", "product_id", "product_key"),
)
BY_SOURCE = {d.source: d for d in DICTIONARIES}
OWNER = {d.table: d.source for d in DICTIONARIES}  # dictionary table -> the source ingest that writes it
BY_ID = {d.id_column: d for d in DICTIONARIES}
KEY_TYPE = "INTEGER"


def key_columns(contract: SourceContract) -> list[str]:
    """The key columns the warehouse table of a source adds to the contract's columns, in order."""
    return [BY_ID[c].key_column for c in contract.column_names if c in BY_ID]


def extend_dictionary(store: Warehouse, con: duckdb.DuckDBPyConnection, dictionary: KeyDictionary, ids: str) -> int:
    """Give the ids of the relation `ids` (column `id_column`) that have no key the next numbers, in id order.

    Leaves the whole dictionary as the temp table `<dictionary.table>` in `con`; returns the keys added.
    """
    ident, key, table = dictionary.id_column, dictionary.key_column, dictionary.table
    known = store.scan(table) if store.exists(table) else f"(SELECT NULL::VARCHAR AS {ident}, NULL::{KEY_TYPE} AS {key} WHERE false)"
    run(con, f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {ident}, {key}::{KEY_TYPE} AS {key} FROM {known}")
    run(
        con,
        f"""
        CREATE OR REPLACE TEMP TABLE new_keys AS
        SELECT {ident},
               ((SELECT coalesce(max({key}), 0) FROM {table}) + row_number() OVER (ORDER BY {ident}))::{KEY_TYPE} AS {key}
        FROM (SELECT DISTINCT {ident} FROM {ids} WHERE {ident} IS NOT NULL
              EXCEPT SELECT {ident} FROM {table})
        """,
    )
    (added,) = run(con, "SELECT count(*) FROM new_keys")[0]
    if added:
        run(con, f"INSERT INTO {table} SELECT * FROM new_keys")
        store.write(con, table, f"SELECT * FROM {table}", order_by=key)
    run(con, "DROP TABLE new_keys")
    return int(added)


def keyed_rows(store: Warehouse, con: duckdb.DuckDBPyConnection, contract: SourceContract, rows: str) -> str:
    """SQL for a source's rows as the warehouse holds them: the contract's columns, then their keys.

    A dimension source first extends its dictionary with its new ids; an event source reads its customer's and
    product's keys from the `customers` and `products` tables, which `con` must have as views.
    """
    if contract.name in BY_SOURCE:
        dictionary = BY_SOURCE[contract.name]
        run(con, f"CREATE OR REPLACE TEMP TABLE source_ids AS SELECT {dictionary.id_column} FROM ({rows})")
        extend_dictionary(store, con, dictionary, "source_ids")
        return with_dimension_key(dictionary, rows)
    if key_columns(contract):
        return with_event_keys(contract, rows)
    return rows


def with_dimension_key(dictionary: KeyDictionary, rows: str) -> str:
    """SQL for the rows of a dimension source with their key (from the session's dictionary table) last."""
    return (
        f"SELECT r.*, d.{dictionary.key_column} FROM ({rows}) AS r "
        f"LEFT JOIN {dictionary.table} AS d USING ({dictionary.id_column})"
    )


def with_event_keys(contract: SourceContract, rows: str) -> str:
    """SQL for the rows of an event source with their customer's and product's keys (from the reference
    tables of the session, `customers` and `products`) last."""
    joins, keys = [], []
    for number, column in enumerate(c for c in contract.column_names if c in BY_ID):
        dictionary = BY_ID[column]
        alias = f"k{number}"
        joins.append(f"LEFT JOIN {dictionary.source} AS {alias} USING ({column})")
        keys.append(f"{alias}.{dictionary.key_column}")
    return f"SELECT r.*, {', '.join(keys)} FROM ({rows}) AS r {' '.join(joins)}"


_KEY_COLUMN = re.compile(r"^(customer|product)_key(_\d+)?$")


def readable_sql(table: str, columns: list[str], dictionaries: dict[str, str] | None = None) -> str:
    """SQL for the rows of `table` (whose columns are `columns`) with the ids next to their keys, for people:
    a `customer_key` gets its `customer_id`, a `product_key_2` its `product_id_2`, from the dictionaries (tables
    or views of their names, or only the relations `dictionaries` gives by name). A table without keys, or with
    its ids already, reads as it is."""
    selected, joins = [], []
    for column in columns:
        match = _KEY_COLUMN.match(column)
        ident = match and f"{match.group(1)}_id{match.group(2) or ''}"
        dictionary = match and BY_ID[f"{match.group(1)}_id"]
        if match and ident not in columns and (dictionaries is None or dictionary.table in dictionaries):
            alias = f"d{len(joins)}"
            relation = dictionaries[dictionary.table] if dictionaries else dictionary.table
            joins.append(f"LEFT JOIN {relation} AS {alias} ON {alias}.{dictionary.key_column} = t.{column}")
            selected.append(f"{alias}.{dictionary.id_column} AS {ident}")
        selected.append(f"t.{column}")
    return f"SELECT {', '.join(selected)} FROM {table} AS t {' '.join(joins)}"


def readable_query(con: duckdb.DuckDBPyConnection, sql: str, dictionaries: dict[str, str] | None = None) -> str:
    """`readable_sql` for the result of a query in `con`."""
    return readable_sql(f"({sql})", con.sql(f"SELECT * FROM ({sql}) LIMIT 0").columns, dictionaries)
