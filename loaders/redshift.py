"""Redshift, as a warehouse and as a source, through S3.

As a warehouse (`loaders.warehouse_redshift`): rows stream out of the source as
gzip-compressed CSV parts in S3, split at row boundaries into files of similar size,
listed in a manifest; one ``COPY … MANIFEST`` per table fills a temporary staging
table, and an update + insert merge it into the raw table in the same transaction as
the high-water mark.

As a source: ``UNLOAD`` writes the query's rows to S3 with a manifest; the parts
are then streamed into the PostgreSQL warehouse with COPY.

Statements are `psycopg2.sql` compositions; they render with the connection they
run on (so quoting follows the server's rules) and, in tests, with any
PostgreSQL connection.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from psycopg2 import sql

from loaders.catalog import Column

NULL_MARKER = r"\N"
# Redshift has no json, arrays, interval, uuid or tsvector: they travel as text.
_REDSHIFT_TYPES = {
    "json": "super",
    "jsonb": "super",
    "uuid": "character(36)",
    "text": "character varying(65535)",
    "bytea": "varbyte(1024000)",
    "interval": "character varying(64)",
    "tsvector": "character varying(65535)",
    "numeric": "numeric(38,10)",
    "inet": "character varying(45)",
    "cidr": "character varying(45)",
    "xml": "character varying(65535)",
    "money": "numeric(19,2)",
}
_PASSTHROUGH = (
    "smallint",
    "integer",
    "bigint",
    "real",
    "double precision",
    "boolean",
    "date",
    "timestamp without time zone",
    "timestamp with time zone",
    "time without time zone",
    "time with time zone",
    "character varying(",
    "character(",
    "numeric(",
)


def redshift_type(postgres_type: str) -> str:
    """The Redshift column type for a (portable) PostgreSQL column type."""
    if postgres_type.endswith("[]"):
        return "super"
    if postgres_type in _REDSHIFT_TYPES:
        return _REDSHIFT_TYPES[postgres_type]
    if postgres_type.startswith(_PASSTHROUGH) or postgres_type in _PASSTHROUGH:
        return postgres_type
    return "character varying(65535)"


def create_raw_table(
    schema: str, table: str, columns: Sequence[Column], *, sort_key: str | None = None
) -> sql.Composed:
    """``create table if not exists`` for a raw table, with the metadata columns."""
    definitions = [
        sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(redshift_type(c.warehouse_type)))
        for c in columns
    ]
    definitions += [
        sql.SQL("_loaded_at timestamptz not null default getdate()"),
        sql.SQL("_batch_id character varying(64)"),
        sql.SQL("_deleted_at timestamptz"),
    ]
    statement = sql.SQL("create table if not exists {} ({}) diststyle auto").format(
        sql.Identifier(schema, table), sql.SQL(", ").join(definitions)
    )
    if sort_key:
        statement = sql.SQL("{} sortkey ({})").format(statement, sql.Identifier(sort_key))
    return statement


def create_stage(stage: str, raw: sql.Identifier) -> sql.Composed:
    """A temporary staging table shaped like the raw table."""
    return sql.SQL("create temporary table {} (like {})").format(sql.Identifier(stage), raw)


def copy_from_manifest(
    target: sql.Identifier,
    columns: Sequence[str],
    *,
    manifest_url: str,
    iam_role: str,
    region: str | None = None,
) -> sql.Composed:
    """``COPY`` a staged manifest of gzip CSV parts into ``target``."""
    parts = [
        sql.SQL("copy {} ({}) from {} iam_role {} manifest").format(
            target,
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.Literal(manifest_url),
            sql.Literal(iam_role),
        ),
        sql.SQL("format as csv null as {} gzip").format(sql.Literal(NULL_MARKER)),
        sql.SQL("timeformat 'auto' dateformat 'auto' compupdate off statupdate off"),
    ]
    if region:
        parts.append(sql.SQL("region {}").format(sql.Literal(region)))
    return sql.SQL(" ").join(parts)


def merge(
    raw: sql.Identifier,
    stage: str,
    columns: Sequence[str],
    primary_key: Sequence[str],
    batch_id: str,
) -> list[sql.Composed]:
    """Update changed rows, insert new ones (run inside the load's transaction)."""
    match = sql.SQL(" and ").join(
        sql.SQL("{} = {}").format(sql.Identifier("target", key), sql.Identifier("stage", key))
        for key in primary_key
    )
    values = [column for column in columns if column not in primary_key]
    assignments = sql.SQL(", ").join(
        [sql.SQL("{} = {}").format(sql.Identifier(c), sql.Identifier("stage", c)) for c in values]
        + [
            sql.SQL("_loaded_at = getdate()"),
            sql.SQL("_batch_id = {}").format(sql.Literal(batch_id)),
            sql.SQL("_deleted_at = null"),
        ]
    )
    names = sql.SQL(", ").join(map(sql.Identifier, columns))
    return [
        sql.SQL(
            "update {raw} set {assignments} from {stage} as stage "
            "where {match_raw} and ({changed_raw})"
        ).format(
            raw=raw,
            assignments=assignments,
            stage=sql.Identifier(stage),
            # Redshift's UPDATE … FROM cannot alias the target: name it in full.
            match_raw=sql.SQL(" and ").join(
                sql.SQL("{}.{} = {}").format(raw, sql.Identifier(key), sql.Identifier("stage", key))
                for key in primary_key
            ),
            changed_raw=sql.SQL(" or ").join(
                [
                    # Redshift has no `is distinct from`: spelled out, null-safe.
                    sql.SQL(
                        "({r}.{c} <> {s} or ({r}.{c} is null and {s} is not null) "
                        "or ({r}.{c} is not null and {s} is null))"
                    ).format(r=raw, c=sql.Identifier(c), s=sql.Identifier("stage", c))
                    for c in values
                ]
                + [sql.SQL("{}._deleted_at is not null").format(raw)]
            ),
        ),
        sql.SQL(
            "insert into {raw} ({names}, _batch_id) select {names}, {batch} from {stage} as stage "
            "where not exists (select 1 from {raw} as target where {match})"
        ).format(
            raw=raw,
            names=names,
            batch=sql.Literal(batch_id),
            stage=sql.Identifier(stage),
            match=match,
        ),
    ]


def unload(
    query: str,
    *,
    s3_prefix: str,
    iam_role: str,
    max_file_size_mb: int = 256,
) -> sql.Composed:
    """``UNLOAD`` a query's rows to S3 as gzip CSV parts with a manifest.

    ``query`` is the rendered select (e.g. ``cursor.mogrify(query, params)``); UNLOAD
    takes it as a string literal, so it is quoted as one.
    """
    return sql.SQL(
        "unload ({query}) to {prefix} iam_role {role} format as csv null as {null} gzip "
        "manifest allowoverwrite parallel on maxfilesize {size} mb"
    ).format(
        query=sql.Literal(query),
        prefix=sql.Literal(s3_prefix),
        role=sql.Literal(iam_role),
        null=sql.Literal(NULL_MARKER),
        size=sql.Literal(max_file_size_mb),
    )


@dataclass
class StagedFiles:
    """Parts written to S3 and the manifest that lists them."""

    bucket: str
    prefix: str
    parts: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0

    @property
    def manifest_key(self) -> str:
        return f"{self.prefix}/manifest.json"

    @property
    def manifest_url(self) -> str:
        return f"s3://{self.bucket}/{self.manifest_key}"

    def manifest(self) -> dict[str, Any]:
        return {
            "entries": [
                {
                    "url": f"s3://{self.bucket}/{part['key']}",
                    "mandatory": True,
                    "meta": {"content_length": part["bytes"]},
                }
                for part in self.parts
            ]
        }


def _row_ends(data: bytes | bytearray) -> Iterator[int]:
    """Positions of the newlines that end CSV rows (outside quoted fields)."""
    quotes = 0
    position = 0
    while (newline := data.find(b"\n", position)) != -1:
        quotes += data.count(b'"', position, newline)
        if quotes % 2 == 0:
            yield newline
        position = newline + 1


def _count_rows(part: bytes) -> int:
    rows = sum(1 for _ in _row_ends(part))
    return rows + (1 if part and not part.endswith(b"\n") else 0)


def split_rows(chunks: Iterable[bytes], *, part_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Regroup a CSV byte stream into parts of about ``part_bytes``, cut only at
    row ends. Yields (part, rows in part)."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= part_bytes:
            # the first row end at or past the target size
            cut = next((end for end in _row_ends(buffer) if end + 1 >= part_bytes), -1)
            if cut < 0:
                break  # the last row is not complete yet: keep reading
            part = bytes(buffer[: cut + 1])
            del buffer[: cut + 1]
            yield part, _count_rows(part)
    if buffer:
        yield bytes(buffer), _count_rows(bytes(buffer))


def copy_out_chunks(
    source_cursor: Any, query: sql.Composable, params: dict[str, Any], *, chunk: int = 1 << 20
) -> Iterator[bytes]:
    """COPY a query's rows out as CSV (Redshift's null marker), yielded in chunks.

    COPY runs in a thread writing into an OS pipe, so at most one chunk is in memory.
    """
    import os
    import threading

    read_fd, write_fd = os.pipe()
    reader, writer = os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb")
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            copy_out_stream(source_cursor, query, params, writer)
        except BaseException as exc:  # re-raised below, in the consuming thread
            errors.append(exc)
        finally:
            writer.close()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while data := reader.read(chunk):
            yield data
    finally:
        reader.close()
        thread.join()
    if errors:
        raise errors[0]


def stage_to_s3(
    source_cursor: Any,
    query: sql.Composable,
    params: dict[str, Any],
    *,
    s3: Any,
    bucket: str,
    prefix: str,
    part_bytes: int = 64 * 1024 * 1024,
) -> StagedFiles:
    """Export a query as gzip CSV parts plus a manifest in S3.

    Rows are exported in batches of about ``part_bytes`` of CSV so memory stays
    bounded by one part.
    """
    return stage_chunks_to_s3(
        copy_out_chunks(source_cursor, query, params),
        s3=s3,
        bucket=bucket,
        prefix=prefix,
        part_bytes=part_bytes,
    )


def stage_chunks_to_s3(
    chunks: Iterable[bytes],
    *,
    s3: Any,
    bucket: str,
    prefix: str,
    part_bytes: int = 64 * 1024 * 1024,
) -> StagedFiles:
    """Write a CSV byte stream to S3 as gzip parts cut at row ends, plus a manifest."""
    staged = StagedFiles(bucket=bucket, prefix=prefix.rstrip("/"))
    for index, (part, rows) in enumerate(split_rows(chunks, part_bytes=part_bytes)):
        key = f"{staged.prefix}/part-{index:05d}.csv.gz"
        body = gzip.compress(part, compresslevel=6)
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        staged.parts.append({"key": key, "bytes": len(body), "rows": rows})
        staged.rows += rows
    s3.put_object(
        Bucket=bucket, Key=staged.manifest_key, Body=json.dumps(staged.manifest()).encode()
    )
    return staged


def read_manifest(s3: Any, manifest_url: str) -> list[str]:
    """The part URLs a manifest lists (ours or UNLOAD's)."""
    bucket, key = _split_url(manifest_url)
    document = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return [entry["url"] for entry in document["entries"]]


def _split_url(url: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url}")
    bucket, _, key = url[5:].partition("/")
    return bucket, key


def copy_manifest_into_postgres(
    warehouse_cursor: Any,
    target: sql.Composable,
    columns: Sequence[str],
    s3: Any,
    manifest_url: str,
) -> int:
    """Stream every part of a manifest (gzip CSV) into a PostgreSQL table with COPY."""
    statement = sql.SQL("copy {} ({}) from stdin with (format csv, null {})").format(
        target, sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Literal(NULL_MARKER)
    )
    total = 0
    for url in read_manifest(s3, manifest_url):
        bucket, key = _split_url(url)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        with gzip.GzipFile(fileobj=body) as stream:
            warehouse_cursor.copy_expert(statement.as_string(warehouse_cursor), stream)
            total += warehouse_cursor.rowcount
    return total


def copy_out_stream(
    source_cursor: Any, query: sql.Composable, params: dict[str, Any], sink: IO[bytes]
) -> None:
    """COPY a query's rows out as CSV with the Redshift null marker."""
    bound = source_cursor.mogrify(query, params).decode()
    statement = sql.SQL("copy ({}) to stdout with (format csv, null {})").format(
        sql.SQL(bound), sql.Literal(NULL_MARKER)
    )
    source_cursor.copy_expert(statement.as_string(source_cursor), sink)
