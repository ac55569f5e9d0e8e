"""Redshift as a source: ``UNLOAD`` the read window to S3 (gzip CSV parts and a
manifest), then stream the parts into the warehouse's COPY through the same pipe
every source uses, so the per-table skeleton merges them like any other load —
rows, merge and high-water mark in one warehouse transaction.

Redshift has no ``COPY … TO STDOUT`` and no view of open transactions' starts, so
the late-commit protection of PostgreSQL sources is replaced by the table's
``lag`` (Redshift transactions are serializable; a writer's rows carry the
timestamps its application gives them). Redshift keeps no unique constraints, so
keys are always checked in the stage. Declare a source as Redshift with
``meta.tidewater.kind: redshift`` and name the bucket in ``TIDEWATER_S3_STAGING``.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from psycopg2 import sql

from loaders.catalog import Column
from loaders.config import SourceConfig, TableConfig
from loaders.exceptions import DeclarationError, LoaderError
from loaders.extract import ALL_ROWS, ReadWindow, Snapshot, build_query
from loaders.load import RawTable
from loaders.redshift import _split_url, read_manifest, unload
from loaders.results import DEFAULT_OPTIONS, ConnectFn, LoadOptions
from loaders.source_engine import SourceEngine
from tidewater.db import connect

# information_schema exists on Redshift; types are reported in PostgreSQL terms.
REDSHIFT_COLUMNS = """
select column_name, data_type, character_maximum_length, numeric_precision, numeric_scale
from information_schema.columns
where table_schema = %(schema)s and table_name = %(table)s
order by ordinal_position
"""

_WAREHOUSE_TYPES = {
    "smallint": "smallint",
    "integer": "integer",
    "bigint": "bigint",
    "real": "real",
    "double precision": "double precision",
    "boolean": "boolean",
    "date": "date",
    "timestamp without time zone": "timestamp without time zone",
    "timestamp with time zone": "timestamp with time zone",
    "time without time zone": "time without time zone",
    "super": "jsonb",
    "varbyte": "bytea",
}


class MissingStaging(LoaderError):
    def __init__(self) -> None:
        super().__init__(
            "a Redshift warehouse or source loads through S3: export "
            "TIDEWATER_S3_STAGING=s3://bucket/prefix and "
            "TIDEWATER_REDSHIFT_IAM_ROLE=arn:aws:iam::…:role/… (a role Redshift may assume "
            "to read and write the bucket)"
        )


def warehouse_type(
    data_type: str, length: int | None, precision: int | None, scale: int | None
) -> str:
    """The PostgreSQL warehouse type for a Redshift column."""
    if data_type in ("character varying", "character"):
        return f"{data_type}({length})" if length else "text"
    if data_type == "numeric":
        return f"numeric({precision},{scale})" if precision else "numeric"
    return _WAREHOUSE_TYPES.get(data_type, "text")


def read_columns(cur: Any, schema: str, table: str) -> tuple[Column, ...]:
    cur.execute(REDSHIFT_COLUMNS, {"schema": schema, "table": table})
    columns = []
    for name, data_type, length, precision, scale in cur.fetchall():
        target = warehouse_type(data_type, length, precision, scale)
        # Redshift's own type name, so extraction casts nothing it need not
        columns.append(Column(name, target, target))
    return tuple(columns)


@dataclass(frozen=True)
class UnloadPlan:
    """What to run on Redshift for one table's read window."""

    statement: sql.Composed
    manifest_url: str


def plan_unload(
    source_cursor: Any,
    source: SourceConfig,
    table: TableConfig,
    columns: tuple[Column, ...],
    *,
    read_from: datetime | None,
    s3_staging: str,
    iam_role: str,
    batch_id: str,
    read_after: bool = False,
) -> UnloadPlan:
    """``UNLOAD`` of select → filter on the cursor (inclusive) to a batch prefix."""
    query, params = build_query(
        source.source_schema,
        table.name,
        columns,
        cursor_column=table.cursor if table.mode == "incremental" else None,
        read_from=read_from,
        read_after=read_after,
    )
    prefix = f"{s3_staging.rstrip('/')}/{source.name}/{table.name}/{batch_id}/"
    statement = unload(
        source_cursor.mogrify(query, params).decode(), s3_prefix=prefix, iam_role=iam_role
    )
    return UnloadPlan(statement=statement, manifest_url=prefix + "manifest")


class RedshiftSource(SourceEngine):
    """A Redshift source (``kind: redshift``), read through UNLOAD and S3."""

    kind = "redshift"
    copy_format = "csv"
    checksum = "md5"
    sees_open_transactions = False
    detects_deletes = False

    def __init__(
        self, source: SourceConfig, connect: ConnectFn, *, options: LoadOptions = DEFAULT_OPTIONS
    ) -> None:
        if not options.s3_staging or not options.iam_role:
            raise MissingStaging
        super().__init__(source, connect, options=options)
        self.cursor = self.connection.cursor()
        self.batch_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")

    @classmethod
    def connector(cls, source: SourceConfig, dsn: str) -> ConnectFn:
        return lambda: connect(dsn, what="source", application_name="tidewater-loader")

    def open_snapshot(self, table: TableConfig) -> Snapshot:
        # Redshift transactions are serializable: the first statement fixes the snapshot.
        self.cursor.execute("select getdate()")
        (now,) = self.cursor.fetchone()
        return Snapshot(
            now.replace(tzinfo=UTC),
            {},
            complete=False,
            incomplete_reason="Redshift shows no open transactions' starts",
        )

    def columns(self, table: TableConfig) -> tuple[Column, ...]:
        where = f"{self.source.name}.{table.name}"
        columns = read_columns(self.cursor, self.source.source_schema, table.name)
        if not columns:
            raise DeclarationError(
                where,
                f"no table {table.name!r} in schema {self.source.source_schema!r} of the "
                "Redshift source",
            )
        names = [column.name for column in columns]
        for needed in (*table.primary_key, *([table.cursor] if table.cursor else [])):
            if needed not in names:
                raise DeclarationError(where, f"column {needed!r} does not exist", candidates=names)
        return columns

    def copy_out(
        self,
        table: str,
        columns: Sequence[Column],
        sink: IO[bytes],
        *,
        cursor: str | None = None,
        window: ReadWindow = ALL_ROWS,
        buckets: tuple[RawTable, Sequence[int]] | None = None,
    ) -> None:
        import boto3

        if buckets is not None:
            raise NotImplementedError("delete detection reads no buckets of a Redshift source")
        assert self.options.s3_staging and self.options.iam_role
        mode = "incremental" if cursor else "bulk"
        plan = plan_unload(
            self.cursor,
            self.source,
            TableConfig(name=table, mode=mode, cursor=cursor),
            tuple(columns),
            read_from=window.read_from,
            read_after=window.after,
            s3_staging=self.options.s3_staging,
            iam_role=self.options.iam_role,
            batch_id=self.batch_id,
        )
        self.cursor.execute(plan.statement)
        s3 = boto3.client("s3")
        for url in read_manifest(s3, plan.manifest_url):
            bucket, key = _split_url(url)
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
            with gzip.GzipFile(fileobj=body) as stream:
                shutil.copyfileobj(stream, sink, 1 << 16)

    def keys_unique(self, table: str, keys: Sequence[str]) -> bool:
        return False  # Redshift declares unique constraints but never enforces them

    def find_split_key(
        self, table: TableConfig, columns: Sequence[Column], window: ReadWindow
    ) -> tuple[list[object], int, int] | None:
        # Only the staged window is checked (in the warehouse); an older row below the
        # window that repeats a key is not looked for.
        return None

    def key_summary(self, raw: RawTable) -> dict[int, tuple[int, int]]:
        raise NotImplementedError("delete detection is not available for Redshift sources")

    def end_read(self) -> None:
        self.connection.rollback()
