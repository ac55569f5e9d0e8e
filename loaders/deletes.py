"""Cheap hard-delete detection: compare row counts and key checksums per
primary-key range between source and warehouse, and re-read only the ranges
that differ."""

from __future__ import annotations

from typing import Literal

from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

from loaders.load import RawTable

INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})
RANGE_SIZE = 10_000
HASH_BUCKETS = 1024
# How key texts are hashed, on both sides of a comparison. ``hashtext``: PostgreSQL's
# own (PostgreSQL sources). ``md5``: the first 32 bits of the key text's MD5 as an
# unsigned number, which other databases (MySQL, MariaDB) compute identically.
Checksum = Literal["hashtext", "md5"]
# Above this many differing ranges, filter with `= any(...)` rather than spelled-out ranges.
MAX_SPELLED_RANGES = 100


def _ranged_key(table: RawTable) -> str | None:
    """The key to split into ranges, when the primary key is a single integer."""
    types = {column.name: column.warehouse_type for column in table.columns}
    keys = table.primary_key
    if len(keys) == 1 and types.get(keys[0]) in INTEGER_TYPES:
        return keys[0]
    return None


ranged_key = _ranged_key  # the same decision, for source engines that bucket in their SQL


def _ref(alias: str | None, column: str) -> sql.Identifier:
    return sql.Identifier(alias, column) if alias else sql.Identifier(column)


def _key_text(table: RawTable, alias: str | None) -> sql.Composable:
    return sql.SQL("concat_ws('|', {})").format(
        sql.SQL(", ").join(
            sql.SQL("cast({} as text)").format(_ref(alias, key)) for key in table.primary_key
        )
    )


def _hash(text: sql.Composable, checksum: Checksum) -> sql.Composable:
    if checksum == "md5":
        return sql.SQL("cast(cast(('x' || substr(md5({}), 1, 8)) as bit(32)) as bigint)").format(
            text
        )
    return sql.SQL("hashtext({})").format(text)


def _bucket_of(
    table: RawTable, alias: str | None, checksum: Checksum = "hashtext"
) -> sql.Composable:
    ranged = _ranged_key(table)
    if ranged is not None:
        return sql.SQL("cast(floor({} / {}) as bigint)").format(
            _ref(alias, ranged), sql.Literal(RANGE_SIZE)
        )
    return sql.SQL("abs(mod({}, {}))").format(
        _hash(_key_text(table, alias), checksum), sql.Literal(HASH_BUCKETS)
    )


def summarize(
    cur: Cursor,
    table: RawTable,
    relation: sql.Composable,
    *,
    live_only: bool,
    checksum: Checksum = "hashtext",
) -> dict[int, tuple[int, int]]:
    """Per bucket: (row count, sum of key hashes)."""
    where = sql.SQL("where _deleted_at is null") if live_only else sql.SQL("")
    cur.execute(
        sql.SQL(
            "select {bucket} as bucket, count(*), cast(sum({hash}) as bigint) "
            "from {relation} {where} group by 1"
        ).format(
            bucket=_bucket_of(table, None, checksum),
            hash=_hash(_key_text(table, None), checksum),
            relation=relation,
            where=where,
        )
    )
    return {int(bucket): (int(count), int(total)) for bucket, count, total in cur.fetchall()}


def differing_buckets(
    source: dict[int, tuple[int, int]], warehouse: dict[int, tuple[int, int]]
) -> list[int]:
    """Buckets whose count or checksum differ, sorted."""
    return sorted(
        bucket
        for bucket in source.keys() | warehouse.keys()
        if source.get(bucket) != warehouse.get(bucket)
    )


def bucket_filter(
    table: RawTable,
    bucket_ids: list[int],
    alias: str | None = None,
    *,
    checksum: Checksum = "hashtext",
) -> sql.Composable:
    """Rows in the given buckets; spelled out as key ranges (index-friendly) when few."""
    ranged = _ranged_key(table)
    if ranged is not None and len(bucket_ids) <= MAX_SPELLED_RANGES:
        column = _ref(alias, ranged)
        return sql.SQL(" or ").join(
            sql.SQL("({column} >= {low} and {column} < {high})").format(
                column=column,
                low=sql.Literal(bucket * RANGE_SIZE),
                high=sql.Literal((bucket + 1) * RANGE_SIZE),
            )
            for bucket in bucket_ids
        )
    return sql.SQL("{} = any({})").format(
        _bucket_of(table, alias, checksum), sql.Literal(bucket_ids)
    )
