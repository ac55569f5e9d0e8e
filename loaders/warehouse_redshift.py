"""The Redshift warehouse engine: the skeleton's statements in the SQL Redshift has.

Rows are staged through S3: the source engine's COPY stream (PostgreSQL text format
is rewritten as CSV on the way) is cut at row ends into gzip parts, listed in a
manifest, and one ``COPY … MANIFEST`` fills a temporary stage; the merge (update +
insert where not exists) and the mark (delete + insert) follow in the same
transaction, so the rows and the mark commit together.

What Redshift lacks, and what this engine does instead:

- no ``jsonb``: JSON is ``super`` in raw tables, JSON text in ``ops``;
- no ``on conflict``: update + ``insert … where not exists``; marks delete + insert;
- no advisory or row locks, no lock modes, no ``lock_timeout``: ``LOCK <raw table>``
  (exclusive: a second load of the table, and readers of it, wait until commit),
  bounded by ``statement_timeout`` (`tidewater.lock.lock_redshift`); the raw lock
  that keeps a PostgreSQL transform out of raw is not taken (Redshift transforms
  read a lookback window instead);
- no savepoints, ``create index``, ``add column if not exists``, arrays as
  parameters or ``set_config``: the catalog is asked first, and the batch id is
  written explicitly;
- delete detection by key checksums (`loaders.deletes`) is not available:
  ``detect_deletes`` is reported and skipped; bulk loads still mark rows that are gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace as replace_column
from typing import IO, Any

from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

from loaders.catalog import METADATA_COLUMNS, Column
from loaders.exceptions import NonUniqueKey
from loaders.load import STAGE, RawTable
from loaders.redshift import (
    NULL_MARKER,
    copy_from_manifest,
    create_raw_table,
    merge,
    redshift_type,
    stage_chunks_to_s3,
)
from loaders.source_redshift import MissingStaging
from loaders.state import Mark, ensure_state_table_redshift, read_mark, write_mark
from loaders.warehouse_engine import CopyFormat, Produce, WarehouseEngine, stream_between
from tidewater.lock import DDL_LOCK, ensure_lock_tables_redshift, lock_redshift, lock_timeout_s
from tidewater.runs import OPS_SCHEMA

# Columns of a table, in Redshift's catalog and PostgreSQL's alike.
TABLE_COLUMNS = """
select column_name from information_schema.columns
where table_schema = %(schema)s and table_name = %(table)s
order by ordinal_position
"""
SCHEMAS = "select nspname from pg_namespace where nspname in %(schemas)s"
SCHEMA_EXISTS = "select 1 from pg_namespace where nspname = %(schema)s"
READ_CHUNK = 1 << 20


class RedshiftWarehouse(WarehouseEngine):
    """A Redshift cluster (or Serverless workgroup), loaded through S3.

    Needs ``options.s3_staging`` (``s3://bucket/prefix``) and ``options.iam_role``
    (the role COPY reads S3 with) to stage rows; the S3 client is boto3's default
    (credentials and endpoint from the environment).
    """

    kind = "redshift"
    detects_deletes = False
    direct_first_load = False
    has_indexes = False
    checks_row_versions = False
    _s3: Any = None

    def begin(self, cur: Cursor, batch_id: str) -> None:
        self.batch_id = batch_id
        cur.execute("set timezone to 'UTC'")

    def hold_locks(self, cur: Cursor, raw_table: str) -> None:
        # The raw table is locked in `prepare_raw_table`, once it exists: Redshift
        # locks tables only, and only exclusively.
        ensure_lock_tables_redshift(cur)

    def hold_ddl(self, cur: Cursor) -> None:
        ensure_lock_tables_redshift(cur)
        lock_redshift(
            cur,
            OPS_SCHEMA,
            DDL_LOCK,
            timeout_s=lock_timeout_s(),
            what="the schema lock (ops.ddl_lock)",
        )

    def existing_schemas(self, cur: Cursor, schemas: Sequence[str]) -> set[str]:
        if not schemas:
            return set()
        cur.execute(SCHEMAS, {"schemas": tuple(schemas)})
        return {row[0] for row in cur.fetchall()}

    def fit_columns(
        self, cur: Cursor, columns: tuple[Column, ...]
    ) -> tuple[tuple[Column, ...], list[str]]:
        fitted = tuple(
            replace_column(column, warehouse_type=redshift_type(column.warehouse_type))
            for column in columns
        )
        return fitted, []

    def ensure_schema(self, cur: Cursor, schema: str) -> None:
        cur.execute(SCHEMA_EXISTS, {"schema": schema})
        if cur.fetchone() is None:
            cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))

    def ensure_state_table(self, cur: Cursor) -> None:
        ensure_state_table_redshift(cur)

    def prepare_raw_table(
        self,
        cur: Cursor,
        schema: str,
        name: str,
        columns: Sequence[Column],
        primary_key: Sequence[str],
        *,
        sort_key: str | None = None,
    ) -> tuple[RawTable, bool]:
        """Create the raw table (sorted by the cursor) or add the source's new columns,
        then lock it for the rest of the transaction. A changed column type is not
        followed (Redshift alters only varchar lengths); its COPY fails instead."""
        cur.execute(TABLE_COLUMNS, {"schema": schema, "table": name})
        existing = [row[0] for row in cur.fetchall()]
        created = not existing
        if created:
            cur.execute(create_raw_table(schema, name, columns, sort_key=sort_key))
        lock_redshift(
            cur,
            schema,
            name,
            timeout_s=lock_timeout_s(),
            what=f"the load lock of {schema}.{name} (lock table)",
        )
        for column in columns:
            if not created and column.name not in existing:
                cur.execute(
                    sql.SQL("alter table {} add column {} {}").format(
                        sql.Identifier(schema, name),
                        sql.Identifier(column.name),
                        sql.SQL(column.warehouse_type),
                    )
                )
        names = {column.name for column in columns}
        dropped = tuple(c for c in existing if c not in names and c not in METADATA_COLUMNS)
        return RawTable(schema, name, tuple(columns), tuple(primary_key), dropped), created

    def read_mark(self, cur: Cursor, source: str, table: str) -> Mark | None:
        return read_mark(cur, source, table)

    def write_mark(self, cur: Cursor, source: str, table: str, mark: Mark) -> None:
        write_mark(cur, source, table, mark, self.batch_id, redshift=True)

    def is_empty(self, cur: Cursor, raw: RawTable) -> bool:
        cur.execute(sql.SQL("select 1 from {} limit 1").format(raw.identifier))
        return cur.fetchone() is None

    def create_stage(self, cur: Cursor, raw: RawTable, *, name: str = STAGE) -> None:
        cur.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(name)))
        cur.execute(
            sql.SQL("create temporary table {} ({})").format(
                sql.Identifier(name),
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.warehouse_type))
                    for c in raw.columns
                ),
            )
        )

    def s3(self) -> Any:
        if self._s3 is None:
            import boto3

            self._s3 = boto3.client("s3")
        return self._s3

    def copy_into(
        self,
        cur: Cursor,
        target: sql.Identifier,
        columns: Sequence[str],
        produce: Produce,
        *,
        copy_format: CopyFormat,
    ) -> int:
        """Stage what ``produce`` writes in S3 (gzip CSV parts and a manifest under
        ``<s3_staging>/<batch id>/<target>``), then ``COPY`` the manifest into
        ``target``."""
        if not self.options.s3_staging or not self.options.iam_role:
            raise MissingStaging
        bucket, _, prefix = self.options.s3_staging.removeprefix("s3://").partition("/")
        key_prefix = "/".join(
            part for part in (prefix.strip("/"), self.batch_id, *target.strings) if part
        )

        def consume(stream: IO[bytes]) -> int:
            chunks = _chunks(stream)
            if copy_format == "text":
                chunks = text_to_csv(chunks)
            staged = stage_chunks_to_s3(chunks, s3=self.s3(), bucket=bucket, prefix=key_prefix)
            cur.execute(
                copy_from_manifest(
                    target,
                    columns,
                    manifest_url=staged.manifest_url,
                    iam_role=self.options.iam_role or "",
                )
            )
            return staged.rows

        return stream_between(produce, consume)

    def ensure_indexes(self, cur: Cursor, raw: RawTable) -> None:
        """Redshift has no indexes: the raw table is sorted by its cursor instead."""

    def check_unique_keys(
        self, cur: Cursor, raw: RawTable, *, where: str, stage: str = STAGE
    ) -> None:
        """A key staged more than once fails the load (Redshift cannot compare whole
        rows of every type, so two identical copies of a row fail too)."""
        keys = sql.SQL(", ").join(map(sql.Identifier, raw.primary_key))
        cur.execute(
            sql.SQL(
                "select {keys}, count(*), count(*) over () from {stage} "
                "group by {keys} having count(*) > 1 order by count(*) desc limit 1"
            ).format(keys=keys, stage=sql.Identifier(stage))
        )
        found = cur.fetchone()
        if found is not None:
            *example, versions, count = found
            raise NonUniqueKey(where, raw.primary_key, example, int(versions), int(count))

    def merge(
        self, cur: Cursor, raw: RawTable, *, stage: str = STAGE, newest_by: str | None = None
    ) -> tuple[int, int]:
        update, insert = merge(
            raw.identifier,
            stage,
            [column.name for column in raw.columns],
            raw.primary_key,
            self.batch_id,
        )
        cur.execute(update)
        updated = cur.rowcount
        cur.execute(insert)
        return cur.rowcount, updated

    def mark_missing_deleted(
        self, cur: Cursor, raw: RawTable, *, keys: str, within: sql.Composable | None = None
    ) -> int:
        # Redshift's UPDATE cannot alias its target: the raw table is named in full.
        match = sql.SQL(" and ").join(
            sql.SQL("{}.{} = {}").format(
                raw.identifier, sql.Identifier(key), sql.Identifier("stage", key)
            )
            for key in raw.primary_key
        )
        cur.execute(
            sql.SQL(
                "update {raw} set _deleted_at = getdate(), _loaded_at = getdate(), "
                "_batch_id = {batch} where _deleted_at is null and ({within}) "
                "and not exists (select 1 from {keys} as stage where {match})"
            ).format(
                raw=raw.identifier,
                batch=sql.Literal(self.batch_id),
                within=within if within is not None else sql.SQL("true"),
                keys=sql.Identifier(keys),
                match=match,
            )
        )
        return cur.rowcount

    def replace(self, cur: Cursor, raw: RawTable) -> tuple[int, int]:
        names = sql.SQL(", ").join(sql.Identifier(c.name) for c in raw.columns)
        cur.execute(sql.SQL("delete from {}").format(raw.identifier))
        deleted = cur.rowcount
        cur.execute(
            sql.SQL("insert into {} ({}, _batch_id) select {}, {} from {}").format(
                raw.identifier, names, names, sql.Literal(self.batch_id), sql.Identifier(STAGE)
            )
        )
        return cur.rowcount, deleted


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while data := stream.read(READ_CHUNK):
        yield data


# PostgreSQL COPY text format escapes (`\\n`, `\\t`, `\\\\`, octal `\\ooo`, hex `\\xhh`).
_ESCAPE = re.compile(rb"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.DOTALL)
_SIMPLE = {b"b": b"\b", b"f": b"\f", b"n": b"\n", b"r": b"\r", b"t": b"\t", b"v": b"\v"}


def _unescape(match: re.Match[bytes]) -> bytes:
    octal, hexadecimal, other = match.groups()
    if octal is not None:
        return bytes([int(octal, 8) & 0xFF])
    if hexadecimal is not None:
        return bytes([int(hexadecimal, 16)])
    return _SIMPLE.get(other, other)


def text_to_csv(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Rewrite PostgreSQL COPY text rows as CSV with ``\\N`` for NULL (what Redshift's
    ``COPY … CSV NULL AS '\\N'`` reads). Every value is quoted, so a text that is
    literally ``\\N`` stays text. A text row is one line: its newlines are escaped."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk
        end = data.rfind(b"\n")
        if end < 0:
            rest = data
            continue
        rest = data[end + 1 :]
        yield b"".join(_csv_row(line) for line in data[:end].split(b"\n"))
    if rest:
        yield _csv_row(rest)


def _csv_row(line: bytes) -> bytes:
    fields = []
    for value in line.split(b"\t"):
        if value == NULL_MARKER.encode():
            fields.append(value)
        else:
            text = _ESCAPE.sub(_unescape, value)
            fields.append(b'"' + text.replace(b'"', b'""') + b'"')
    return b",".join(fields) + b"\n"
