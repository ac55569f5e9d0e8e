"""One table, one transaction; one job for all declared tables.

For each table: read a consistent snapshot of the source, stream the rows in the
read window through COPY into a staging table, merge by primary key, detect
deletes, and write the high-water mark — all committed together, so a crash at
any point leaves the warehouse and the mark as they were.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Literal

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from loaders import deletes
from loaders.catalog import read_primary_key, validate_table
from loaders.config import SourceConfig, TableConfig
from loaders.exceptions import BadData, LoadRunFailed, TableLoadFailed
from loaders.extract import (
    build_query,
    copy_out,
    next_read_from,
    open_snapshot,
    window_stats,
)
from loaders.load import (
    STAGE,
    RawTable,
    copy_in,
    create_stage,
    ensure_indexes,
    ensure_schema,
    mark_missing_deleted,
    merge_stage,
    prepare_raw_table,
    replace_if_changed,
)
from loaders.state import Mark, ensure_state_table, read_mark, write_mark
from tidewater.db import connect, is_transient

Status = Literal["succeeded", "failed", "skipped"]
ConnectFn = Callable[[], psycopg2.extensions.connection]
CURSOR_TYPES = frozenset({"timestamp with time zone", "timestamp without time zone"})
# Data errors: SQLSTATE class 22 (data exception) and invalid encodings.
BAD_DATA_CLASSES = ("22",)


@dataclass
class TableResult:
    """The numbers of one table load."""

    source: str
    table: str
    mode: str
    batch_id: str
    status: Status = "succeeded"
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    reread: int = 0
    mark_before: datetime | None = None
    mark_after: datetime | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_s: float = 0.0
    attempts: int = 1
    error: str | None = None
    error_class: str | None = None
    failure: TableLoadFailed | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"{self.source}.{self.table}"


@dataclass(frozen=True)
class LoadOptions:
    workers: int = 4
    retries: int = 5
    keep_going: bool = False
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    warehouse_type: Literal["postgres", "redshift"] = "postgres"
    s3_staging: str | None = None  # s3://bucket/prefix, for a Redshift warehouse
    iam_role: str | None = None  # the role Redshift's COPY reads S3 with


def new_batch_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


class _Pipe:
    """Stream COPY output of one connection into COPY input of another, through an
    OS pipe, so no table is ever held in memory."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.reader = os.fdopen(read_fd, "rb", buffering=1 << 16)
        self.writer = os.fdopen(write_fd, "wb", buffering=1 << 16)
        self.error: BaseException | None = None

    def produce(self, work: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # re-raised in the consuming thread
                self.error = exc
            finally:
                with contextlib.suppress(OSError):
                    self.writer.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def _stream(
    source_cur: psycopg2.extensions.cursor,
    query: sql.Composable,
    params: dict,
    warehouse_cur: psycopg2.extensions.cursor,
    target: sql.Composable,
    columns: list[str],
) -> int:
    """COPY the query's rows from the source into ``target``; a staging table is
    analyzed afterwards, so the merge plan fits its size (a handful of rows joins
    by index, not by scanning the raw table)."""
    count = _copy_between(source_cur, query, params, warehouse_cur, target, columns)
    if target == sql.Identifier(STAGE):
        warehouse_cur.execute(sql.SQL("analyze {}").format(target))
    return count


def _copy_between(
    source_cur: psycopg2.extensions.cursor,
    query: sql.Composable,
    params: dict,
    warehouse_cur: psycopg2.extensions.cursor,
    target: sql.Composable,
    columns: list[str],
) -> int:
    pipe = _Pipe()
    thread = pipe.produce(lambda: copy_out(source_cur, query, params, pipe.writer))
    try:
        count = copy_in(warehouse_cur, target, columns, pipe.reader)
    finally:
        pipe.reader.close()  # unblocks the producer if the consumer failed
        thread.join()
    if pipe.error is not None:
        raise pipe.error
    return count


def load_table(
    source: SourceConfig,
    table: TableConfig,
    *,
    connect_source: ConnectFn,
    connect_warehouse: ConnectFn,
    batch_id: str,
) -> TableResult:
    """Load one table in one warehouse transaction (one attempt)."""
    result = TableResult(source.name, table.name, table.mode, batch_id)
    started = time.perf_counter()
    source_conn = connect_source()
    warehouse_conn = connect_warehouse()
    try:
        src = source_conn.cursor()
        snapshot = open_snapshot(
            source_conn,
            relation=(source.source_schema, table.name) if table.detect_deletes else None,
        )
        columns = validate_table(src, source, table)
        cursor_type = next((c.warehouse_type for c in columns if c.name == table.cursor), None)
        if table.mode == "incremental" and cursor_type not in CURSOR_TYPES:
            from loaders.exceptions import DeclarationError

            raise DeclarationError(
                f"{source.name}.{table.name}",
                f"cursor {table.cursor!r} has type {cursor_type}; an incremental cursor must be "
                "a timestamp the database sets on every write (e.g. updated_at); otherwise "
                "use mode: bulk",
            )
        wh = warehouse_conn.cursor()
        wh.execute("set local timezone = 'UTC'")
        wh.execute("select set_config('tidewater.batch_id', %s, true)", (batch_id,))
        # No transform reads raw while this load is in flight (tidewater.lock.raw_settled).
        wh.execute("select pg_advisory_xact_lock_shared(hashtext('tidewater.raw'))")
        # Two loads of the same table never run at once, whoever starts them.
        wh.execute(
            "select pg_advisory_xact_lock(hashtext('tidewater.load'), hashtext(%s))",
            (f"{source.raw_schema}.{table.name}",),
        )
        ensure_schema(wh, source.raw_schema)
        ensure_state_table(wh)
        raw, created = prepare_raw_table(
            wh, source.raw_schema, table.name, columns, table.primary_key
        )
        names = [column.name for column in columns]

        previous: Mark | None = None
        if table.mode == "incremental":
            previous = _load_incremental(src, wh, source, table, raw, created, result)
        else:
            _load_bulk(src, wh, source, raw, result)
        ensure_indexes(wh, raw)
        # Reconcile deletes only when the source's delete counter moved since the
        # last reconciliation (or cannot be read, as for views).
        if (
            table.detect_deletes
            and table.primary_key
            and table.mode == "incremental"
            and (
                snapshot.source_deletes is None
                or previous is None
                or previous.source_deletes != snapshot.source_deletes
            )
        ):
            result.deleted += _detect_deletes(src, wh, source, raw, names, batch_id, result)
        if table.mode == "incremental":
            assert table.cursor is not None
            mark_after = max(filter(None, [result.mark_before, result.mark_after]), default=None)
            write_mark(
                wh,
                source.name,
                table.name,
                Mark(
                    table.cursor,
                    mark_after,
                    next_read_from(
                        mark=mark_after,
                        snapshot=snapshot,
                        lag=table.lag,
                        protect=table.late_commit_protection,
                    ),
                    source_deletes=snapshot.source_deletes if table.detect_deletes else None,
                ),
                batch_id,
            )
            result.mark_after = mark_after
        warehouse_conn.commit()
        source_conn.rollback()
    except psycopg2.DataError as exc:
        warehouse_conn.rollback()
        reason = " ".join(str(exc).split())
        if "invalid byte sequence" in reason:
            reason += _locate_invalid_text(connect_source, source, table)
        raise BadData(f"{source.name}.{table.name}", reason) from exc
    finally:
        result.duration_s = time.perf_counter() - started
        for conn in (source_conn, warehouse_conn):
            with contextlib.suppress(psycopg2.Error):
                conn.close()
    return result


def _locate_invalid_text(
    connect_source: ConnectFn, source: SourceConfig, table: TableConfig
) -> str:
    """Find the first key and column holding bytes that are not valid UTF-8."""
    conn = connect_source()
    try:
        cur = conn.cursor()
        columns = validate_table(cur, source, table)
        texts = [
            c.name
            for c in columns
            if c.warehouse_type in ("text", "character varying")
            or c.warehouse_type.startswith(("character varying(", "character("))
        ]
        keys = list(table.primary_key) or [columns[0].name]
        if not texts:
            return ""
        cur.execute(
            sql.SQL("select {}, {} from {}").format(
                sql.SQL(", ").join(
                    sql.SQL("cast({} as text)").format(sql.Identifier(k)) for k in keys
                ),
                sql.SQL(", ").join(
                    sql.SQL("convert_to({}, 'SQL_ASCII')").format(sql.Identifier(c)) for c in texts
                ),
                sql.Identifier(source.source_schema, table.name),
            )
        )
        for row in cur:
            for name, value in zip(texts, row[len(keys) :], strict=True):
                if value is None:
                    continue
                try:
                    bytes(value).decode("utf-8")
                except UnicodeDecodeError:
                    key = ", ".join(f"{k}={v}" for k, v in zip(keys, row, strict=False))
                    return (
                        f" (first at key {key}, column {name}); fix the value at the source "
                        "or convert the column (e.g. with convert_from) in a view and load that"
                    )
        return ""
    except psycopg2.Error:
        return ""
    finally:
        conn.close()


def _load_incremental(
    src: psycopg2.extensions.cursor,
    wh: psycopg2.extensions.cursor,
    source: SourceConfig,
    table: TableConfig,
    raw: RawTable,
    created: bool,
    result: TableResult,
) -> Mark | None:
    """Read the window above the mark and merge it; returns the previous mark."""
    assert table.cursor is not None
    previous = None if created else read_mark(wh, source.name, table.name)
    read_from = previous.read_from if previous else None
    result.mark_before = previous.mark if previous else None
    rows, maximum, reread = window_stats(
        src, source.source_schema, table.name, table.cursor, read_from, result.mark_before
    )
    result.rows_read, result.reread = max(rows, 0), reread
    result.mark_after = _aware(maximum)
    if rows == 0 or maximum is None:
        return previous
    query, params = build_query(
        source.source_schema,
        table.name,
        raw.columns,
        cursor_column=table.cursor,
        read_from=read_from,
    )
    names = [column.name for column in raw.columns]
    wh.execute(sql.SQL("select exists (select from {})").format(raw.identifier))
    empty = not wh.fetchone()[0]
    # The source itself guarantees unique keys (its primary key is the declared one):
    # a first load can COPY straight into the raw table. Otherwise (views, declared
    # keys) rows go through the stage, where duplicates keep the newest version.
    unique_at_source = read_primary_key(src, source.source_schema, table.name) == table.primary_key
    if empty and unique_at_source:
        # First load into an empty table: COPY straight in (indexes come after).
        result.inserted = _stream(src, query, params, wh, raw.identifier, names)
        result.rows_read = result.inserted
        ensure_indexes(wh, raw)
        wh.execute(sql.SQL("analyze {}").format(raw.identifier))
        return previous
    ensure_indexes(wh, raw)
    create_stage(wh, raw)
    _stream(src, query, params, wh, sql.Identifier(STAGE), names)
    result.inserted, result.updated = merge_stage(wh, raw, result.batch_id, newest_by=table.cursor)
    return previous


def _aware(value: datetime | None) -> datetime | None:
    """Cursor values of `timestamp without time zone` columns are taken as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _load_bulk(
    src: psycopg2.extensions.cursor,
    wh: psycopg2.extensions.cursor,
    source: SourceConfig,
    raw: RawTable,
    result: TableResult,
) -> None:
    query, params = build_query(source.source_schema, raw.name, raw.columns)
    names = [column.name for column in raw.columns]
    ensure_indexes(wh, raw)
    create_stage(wh, raw)
    result.rows_read = _stream(src, query, params, wh, sql.Identifier(STAGE), names)
    if raw.primary_key:
        result.inserted, result.updated = merge_stage(wh, raw, result.batch_id)
        result.deleted = mark_missing_deleted(wh, raw, result.batch_id, keys=STAGE)
    else:
        result.inserted, result.deleted = replace_if_changed(wh, raw, result.batch_id)


def _detect_deletes(
    src: psycopg2.extensions.cursor,
    wh: psycopg2.extensions.cursor,
    source: SourceConfig,
    raw: RawTable,
    names: list[str],
    batch_id: str,
    result: TableResult,
) -> int:
    """Compare key checksums per range; re-read and reconcile only differing ranges."""
    in_source = deletes.summarize(
        src, raw, sql.Identifier(source.source_schema, raw.name), live_only=False
    )
    in_warehouse = deletes.summarize(wh, raw, raw.identifier, live_only=True)
    differing = deletes.differing_buckets(in_source, in_warehouse)
    if not differing:
        return 0
    query, params = build_query(
        source.source_schema,
        raw.name,
        raw.columns,
        extra_filter=deletes.bucket_filter(raw, differing),
    )
    create_stage(wh, raw)
    result.reread += _stream(src, query, params, wh, sql.Identifier(STAGE), names)
    inserted, updated = merge_stage(wh, raw, batch_id)
    result.inserted += inserted
    result.updated += updated
    return mark_missing_deleted(
        wh, raw, batch_id, keys=STAGE, within=deletes.bucket_filter(raw, differing, "target")
    )


def _classify(exc: BaseException) -> str:
    return "transient" if is_transient(exc) else "terminal"


def load_with_retries(
    source: SourceConfig,
    table: TableConfig,
    *,
    connect_source: ConnectFn,
    connect_warehouse: ConnectFn,
    batch_id: str,
    options: LoadOptions,
) -> TableResult:
    """Retry transient faults with exponential backoff and jitter; stop on real ones."""
    attempts = 0

    def count(_: RetryCallState) -> None:
        nonlocal attempts
        attempts += 1

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(options.retries),
        wait=wait_exponential_jitter(multiplier=options.backoff_initial, max=options.backoff_max),
        before=count,
        reraise=True,
    )
    started = datetime.now(UTC)
    loader = load_table
    if options.warehouse_type == "redshift":
        from loaders.redshift_pipeline import load_table_redshift

        loader = partial(load_table_redshift, options=options)  # type: ignore[assignment]
    elif source.kind == "redshift":
        from loaders.redshift_source import load_table_from_redshift

        loader = partial(load_table_from_redshift, options=options)  # type: ignore[assignment]
    try:
        result = retrying(
            loader,
            source,
            table,
            connect_source=connect_source,
            connect_warehouse=connect_warehouse,
            batch_id=batch_id,
        )
    except Exception as exc:
        raise TableLoadFailed(
            f"{source.name}.{table.name}", exc, transient=is_transient(exc)
        ) from exc
    return replace(result, attempts=attempts, started_at=started)


def load_all(
    sources: tuple[SourceConfig, ...],
    *,
    source_connectors: dict[str, ConnectFn],
    connect_warehouse: ConnectFn,
    options: LoadOptions = LoadOptions(),
    on_done: Callable[[TableResult], None] | None = None,
    only_tables: set[str] | None = None,
) -> list[TableResult]:
    """Load every declared table with a bounded pool of workers.

    By default the first failure stops the run: tables not yet started are
    skipped. With ``keep_going`` the others still load. Returns every table's
    result, failed ones included; see `raise_on_failure`.
    """
    batch_id = new_batch_id()
    work = [
        (source, table)
        for source in sources
        for table in source.tables
        if only_tables is None
        or table.name in only_tables
        or f"{source.name}.{table.name}" in only_tables
    ]
    results: list[TableResult] = []
    stop = threading.Event()
    prepare_warehouse(connect_warehouse, sources)

    def run(source: SourceConfig, table: TableConfig) -> TableResult:
        if stop.is_set():
            return TableResult(source.name, table.name, table.mode, batch_id, status="skipped")
        try:
            return load_with_retries(
                source,
                table,
                connect_source=source_connectors[source.name],
                connect_warehouse=connect_warehouse,
                batch_id=batch_id,
                options=options,
            )
        except TableLoadFailed:
            if not options.keep_going:
                stop.set()
            raise

    with ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        futures: dict[Future[TableResult], tuple[SourceConfig, TableConfig]] = {
            pool.submit(run, source, table): (source, table) for source, table in work
        }
        for future in as_completed(futures):
            source, table = futures[future]
            try:
                result = future.result()
            except TableLoadFailed as failure:
                result = TableResult(
                    source.name,
                    table.name,
                    table.mode,
                    batch_id,
                    status="failed",
                    error=str(failure),
                    error_class=_classify(failure.error),
                    failure=failure,
                )
            results.append(result)
            if on_done is not None:
                on_done(result)
    return results


def prepare_warehouse(
    connect_warehouse: ConnectFn, sources: tuple[SourceConfig, ...]
) -> tuple[str, ...]:
    """Create raw schemas and the mark table once, before tables load in parallel.

    Returns the schemas it created (they need the role spec's grants)."""
    conn = connect_warehouse()
    try:
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_xact_lock(hashtext('tidewater.ddl'))")
            created = tuple(
                source.raw_schema for source in sources if ensure_schema(cur, source.raw_schema)
            )
            ensure_state_table(cur)
        conn.commit()
    finally:
        conn.close()
    return created


def raise_on_failure(results: list[TableResult]) -> None:
    """Raise `LoadRunFailed` if any table failed (so nothing downstream runs)."""
    failures = [r.failure for r in results if r.failure is not None]
    if failures:
        raise LoadRunFailed(failures)


def connector(dsn: str, *, what: str) -> ConnectFn:
    return lambda: connect(dsn, what=what, application_name="tidewater-loader")
