"""Integer surrogate keys: every customer and product id is given one number, once, and keeps it.

The dictionaries `customer_keys` (customer_id, customer_key) and `product_keys` (product_id, product_key) are
tables of the warehouse that only grow. The customers and products ingests add the ids they have not seen
before, numbered after the largest key in id order (a fresh warehouse numbers its ids 1, 2, … in id order), and
give every accepted row its key; the event sources get their customer's and product's keys at ingest. An id that
leaves the source keeps its key, so it comes back with the same number; keys never change across runs or hourly
refreshes. The derived stages join, group and sort on these integers; the original ids stay in the sources and
come back where people read them (customer_top_recommendations, the serving tables, the catalog views).

A dictionary is written before the rows that use it and is never shrunk: keys given to the rows of an ingest
that later fails its checks stay reserved for those ids. A dictionary that goes missing while its source still
holds keys is never started again from 1 (the ingest fails and says so).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from recopipeline.lib.contract import SourceContract

if TYPE_CHECKING:  # the warehouse builds its catalog views with readable_sql
    from recopipeline.lib.warehouse import Warehouse


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
BY_ID = {d.id_column: d for d in DICTIONARIES}
OWNER = {d.table: d.source for d in DICTIONARIES}  # dictionary table -> the source ingest that writes it
KEY_TYPE = "INTEGER"
MISSING_KEY = "an accepted row has no key in the dictionaries"


class DictionaryError(RuntimeError):
    """A key dictionary is missing while its source still holds keys."""


def key_columns(contract: SourceContract) -> list[str]:
    """The key columns the warehouse table of a source adds to the contract's columns, in order."""
    return [BY_ID[c].key_column for c in contract.column_names if c in BY_ID]


def owning_assets(tables: Iterable[str]) -> list[str]:
    """The assets that write the tables, in order: a dictionary is written by its source's ingest."""
    return list(dict.fromkeys(OWNER.get(table, table) for table in tables))


def dictionary_relations(store: Warehouse) -> dict[str, str]:
    """The warehouse's dictionaries that exist, as table expressions by name."""
    return {d.table: store.scan(d.table) for d in DICTIONARIES if store.exists(d.table)}


def extend_dictionary(store: Warehouse, con: duckdb.DuckDBPyConnection, dictionary: KeyDictionary, ids: str) -> int:
    """Give the ids of the relation `ids` (column `id_column`) that have no key the next numbers, in id order.

    Leaves the whole dictionary as the temp table `<dictionary.table>` in `con`; returns the keys added.
    """
    ident, key, table = dictionary.id_column, dictionary.key_column, dictionary.table
    if store.exists(table):
        known = store.scan(table)
    else:
        _refuse_restart(store, dictionary)
        known = f"(SELECT NULL::VARCHAR AS {ident}, NULL::{KEY_TYPE} AS {key} WHERE false)"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT {ident}, {key}::{KEY_TYPE} AS {key} FROM {known}")
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE new_keys AS
        SELECT {ident},
               ((SELECT coalesce(max({key}), 0) FROM {table})
                + row_number() OVER (ORDER BY {ident}))::{KEY_TYPE} AS {key}
        FROM (SELECT DISTINCT {ident} FROM {ids} WHERE {ident} IS NOT NULL
              EXCEPT SELECT {ident} FROM {table})
        """
    )
    (added,) = con.execute("SELECT count(*) FROM new_keys").fetchall()[0]
    if added:
        con.execute(f"INSERT INTO {table} SELECT * FROM new_keys")
        store.write(con, table, f"SELECT * FROM {table}", order_by=key)
    con.execute("DROP TABLE new_keys")
    return int(added)


def _refuse_restart(store: Warehouse, dictionary: KeyDictionary) -> None:
    """Numbering again from 1 would give the keys the source's rows hold to other ids."""
    if not store.exists(dictionary.source):
        return
    with store.session([dictionary.source]) as con:
        columns = con.sql(f"SELECT * FROM {dictionary.source} LIMIT 0").columns
        if dictionary.key_column not in columns:
            return  # a warehouse from before the keys: its tables are keyed from scratch
        (keyed,) = con.execute(
            f"SELECT count({dictionary.key_column}) FROM {dictionary.source}"
        ).fetchall()[0]
    if keyed:
        raise DictionaryError(
            f"the key dictionary '{dictionary.table}' is missing but '{dictionary.source}' holds keys: "
            f"restore {store.asset_dir(dictionary.table)} (new keys would be given to other ids)"
        )


def keyed_rows(store: Warehouse, con: duckdb.DuckDBPyConnection, contract: SourceContract, rows: str) -> str:
    """SQL for a source's rows as the warehouse holds them: the contract's columns, then their keys.

    A dimension source first extends its dictionary with its new ids. An event source reads its customer's and
    product's keys from the dictionaries, which hold every id ever accepted; a row whose key cannot be found
    (an id never accepted) fails the statement that reads it rather than losing its key.
    """
    if contract.name in BY_SOURCE:
        dictionary = BY_SOURCE[contract.name]
        con.execute(f"CREATE OR REPLACE TEMP TABLE source_ids AS SELECT {dictionary.id_column} FROM ({rows})")
        extend_dictionary(store, con, dictionary, "source_ids")
        return _with_keys(contract, rows, {dictionary.table: dictionary.table})
    if key_columns(contract):
        used = [BY_ID[c] for c in contract.column_names if c in BY_ID]
        for dictionary in used:
            if not store.exists(dictionary.table):
                raise DictionaryError(
                    f"'{contract.name}' needs the key dictionary '{dictionary.table}': ingest {dictionary.source} first"
                )
        return _with_keys(contract, rows, {d.table: store.scan(d.table) for d in used})
    return rows


def _with_keys(contract: SourceContract, rows: str, dictionaries: dict[str, str]) -> str:
    """The rows with the key of each of their ids last, from the dictionaries (table expressions by name)."""
    joins, keys = [], []
    for number, column in enumerate(c for c in contract.column_names if c in BY_ID):
        dictionary = BY_ID[column]
        alias = f"k{number}"
        joins.append(f"LEFT JOIN {dictionaries[dictionary.table]} AS {alias} USING ({column})")
        keys.append(
            f"coalesce({alias}.{dictionary.key_column}, error('{MISSING_KEY}: ' || r.{column})) "
            f"AS {dictionary.key_column}"
        )
    return f"SELECT r.*, {', '.join(keys)} FROM ({rows}) AS r {' '.join(joins)}"


_KEY_COLUMN = re.compile(r"^(customer|product)_key(_\d+)?$")


def readable_sql(table: str, columns: list[str], dictionaries: dict[str, str] | None = None) -> str:
    """SQL for the rows of `table` (whose columns are `columns`) with the ids next to their keys, for people:
    a `customer_key` gets its `customer_id`, a `product_key_2` its `product_id_2`, from the dictionaries (tables
    or views of their names, or only the table expressions `dictionaries` gives by name). A table without keys,
    or with its ids already, reads as it is."""
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


def create_readable_views(con: duckdb.DuckDBPyConnection, tables: Mapping[str, str], dictionaries: Iterable[str]) -> None:
    """Create or replace one view per table (name -> table expression) that shows the ids next to the keys, from
    the dictionaries named, which are views of `con` or among `tables` (those are made first)."""
    named = {table: table for table in dictionaries}
    for name in sorted(tables, key=lambda n: (n not in named, n)):
        stored = f"(SELECT * FROM {tables[name]})"
        columns = [row[0] for row in con.execute(f"DESCRIBE SELECT * FROM {stored}").fetchall()]
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {readable_sql(stored, columns, named)}")


def readable_query(con: duckdb.DuckDBPyConnection, sql: str, dictionaries: dict[str, str] | None = None) -> str:
    """`readable_sql` for the result of a query in `con`."""
    return readable_sql(f"({sql})", con.sql(f"SELECT * FROM ({sql}) LIMIT 0").columns, dictionaries)
