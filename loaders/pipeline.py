"""One table, one transaction; one job for all declared tables.

For each table: read a consistent snapshot of the source, stream the rows in the
read window through COPY into a staging table, merge by primary key, detect
deletes, and write the high-water mark — all committed together, so a crash at
any point leaves the warehouse and the mark as they were.

This is the one per-table skeleton: warehouse session settings, the raw lock, the
table-load lock, the raw table, merges, marks and retries are written here once;
what differs between source databases is a source engine (`loaders.engines`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from loaders.config import SourceConfig, TableConfig
from loaders.deletes import bucket_filter, differing_buckets, summarize
from loaders.engines import engine_for
from loaders.exceptions import (
    BadData,
    DeclarationError,
    LoadRunFailed,
    NonUniqueKey,
    TableLoadFailed,
)
from loaders.extract import ReadWindow, plan_next_read
from loaders.load import STAGE, RawTable
from loaders.results import (
    DEFAULT_OPTIONS,
    ConnectFn,
    LoadOptions,
    Status,
    TableResult,
    aware,
    new_batch_id,
)
from loaders.source_engine import SourceEngine
from loaders.state import Mark
from loaders.warehouse_engine import (
    PostgresWarehouse,
    WarehouseEngine,
    warehouse_for,
)
from tidewater.db import connect, is_redshift, is_transient

__all__ = [
    "ConnectFn",
    "LoadOptions",
    "Status",
    "TableResult",
    "connector",
    "load_all",
    "load_table",
    "load_with_retries",
    "new_batch_id",
    "prepare_warehouse",
    "raise_on_failure",
]

log = logging.getLogger(__name__)
CURSOR_TYPES = frozenset({"timestamp with time zone", "timestamp without time zone"})
# Data errors: SQLSTATE class 22 (data exception) and invalid encodings.
BAD_DATA_CLASSES = ("22",)


def _copy_between(
    engine: SourceEngine,
    warehouse: WarehouseEngine,
    produce: Callable[..., None],
    warehouse_cur: psycopg2.extensions.cursor,
    target: sql.Identifier,
    columns: list[str],
) -> int:
    """Run ``produce(sink)`` (an engine's `copy_out`) into the warehouse's COPY."""
    return warehouse.copy_into(warehouse_cur, target, columns, produce, copy_format=engine.format)


def load_table(
    source: SourceConfig,
    table: TableConfig,
    *,
    connect_source: ConnectFn,
    connect_warehouse: ConnectFn,
    batch_id: str,
    options: LoadOptions = DEFAULT_OPTIONS,
) -> TableResult:
    """Load one table in one warehouse transaction (one attempt).

    Two phases. The source phase reads everything this load needs from one
    consistent snapshot of the source (its engine's) — the read window, and for
    delete detection the key checksums and the ranges that differ — streaming rows
    into staging tables in the warehouse. Then the source transaction ends, and
    only then does the warehouse merge, build indexes and write the mark: the
    source is held (its locks, its snapshot) for the reads alone (``source_held_s``).
    """
    result = TableResult(source.name, table.name, table.mode, batch_id)
    started = time.perf_counter()
    engine_class = engine_for(source.kind)
    warehouse = warehouse_for(options.warehouse_type, options=options)
    engine = engine_class(source, connect_source, options=options)
    try:
        warehouse_conn = connect_warehouse()
    except BaseException:
        engine.close()
        raise
    try:
        snapshot = engine.open_snapshot(table)
        columns = engine.columns(table)
        cursor_type = next((c.warehouse_type for c in columns if c.name == table.cursor), None)
        if table.mode == "incremental" and cursor_type not in CURSOR_TYPES:
            raise DeclarationError(
                f"{source.name}.{table.name}",
                f"cursor {table.cursor!r} has type {cursor_type}; an incremental cursor must be "
                "a timestamp the database sets on every write (e.g. updated_at); otherwise "
                "use mode: bulk",
            )
        wh = warehouse_conn.cursor()
        warehouse.begin(wh, batch_id)
        # No transform reads raw while this load is in flight, and two loads of the
        # same table never run at once, whoever starts them.
        warehouse.hold_locks(wh, f"{source.raw_schema}.{table.name}")
        columns, notes = warehouse.fit_columns(wh, columns)
        result.copy_format = engine.choose_format(
            columns, warehouse=warehouse.kind, warehouse_version=warehouse_conn.server_version
        )
        result.warnings += [f"{result.name}: {note}" for note in notes]
        for parent in engine.declared_ancestors(table):
            result.warnings.append(
                f"{result.name} is a partition of {source.name}.{parent}, which is declared "
                f"too: its rows are stored twice ({source.raw_schema}.{parent} and "
                f"{source.raw_schema}.{table.name}); declare only one of them"
            )
        # In this transaction: a failed first load leaves no empty schema behind.
        warehouse.ensure_schema(wh, source.raw_schema)
        warehouse.ensure_state_table(wh)
        raw, created = warehouse.prepare_raw_table(
            wh,
            source.raw_schema,
            table.name,
            columns,
            table.primary_key,
            sort_key=table.cursor if table.mode == "incremental" else None,
        )
        names = [column.name for column in columns]
        raw = _with_declared_indexes(warehouse, raw, table, result)

        # Warehouse work that waits until the source is released, in order.
        merges: list[Callable[[], None]] = []
        previous: Mark | None = None
        window = ReadWindow(None)
        if table.mode == "incremental":
            previous = None if created else warehouse.read_mark(wh, source.name, table.name)
            if previous is not None:
                window = ReadWindow(previous.read_from, previous.read_after)
            _read_incremental(engine, warehouse, wh, table, raw, window, previous, result, merges)
        else:
            _read_bulk(engine, warehouse, wh, raw, result, merges)
        # Reconcile deletes only when the source's delete counter moved since the
        # last reconciliation (or cannot be read, as for views).
        if table.detect_deletes and not engine.detects_deletes:
            result.warnings.append(
                f"{result.name}: detect_deletes is not available for {source.kind} sources; "
                "load the table with mode: bulk to mark rows that are gone"
            )
        elif table.detect_deletes and not warehouse.detects_deletes:
            result.warnings.append(
                f"{result.name}: detect_deletes is not available in a {warehouse.kind} "
                "warehouse; load the table with mode: bulk to mark rows that are gone"
            )
        elif (
            table.detect_deletes
            and table.primary_key
            and table.mode == "incremental"
            and (
                snapshot.source_deletes is None
                or previous is None
                or previous.source_deletes != snapshot.source_deletes
            )
        ):
            _read_deletes(engine, warehouse, wh, raw, names, result, merges)
        # Every read is done: end the source transaction before the warehouse's work.
        engine.end_read()
        result.source_held_s = time.perf_counter() - started
        for merge in merges:
            merge()
        if created:
            warehouse.settle_created_table(wh, raw)
        warehouse.ensure_indexes(wh, raw)
        if table.mode == "incremental":
            assert table.cursor is not None
            mark_after = max(filter(None, [result.mark_before, result.mark_after]), default=None)
            plan = plan_next_read(
                mark=mark_after,
                snapshot=snapshot,
                this_read=window,
                previous_look=previous.looked_at if previous else None,
                previously_open=previous.open_transactions if previous else (),
                lag=table.lag,
                protect=table.late_commit_protection and engine.sees_open_transactions,
            )
            warehouse.write_mark(
                wh,
                source.name,
                table.name,
                Mark(
                    table.cursor,
                    mark_after,
                    plan.window.read_from,
                    source_deletes=snapshot.source_deletes if table.detect_deletes else None,
                    read_after=plan.window.after,
                    looked_at=plan.looked_at,
                    open_transactions=plan.open_transactions,
                ),
            )
            result.mark_after = mark_after
            result.late_commit_safety = plan.safety
        warehouse_conn.commit()
        if result.late_commit_safety and result.late_commit_safety.startswith("unproven"):
            log.warning(
                "%s: late commits NOT proven safe: %s", result.name, result.late_commit_safety
            )
    except psycopg2.DataError as exc:
        warehouse_conn.rollback()
        reason = " ".join(str(exc).split())
        if "invalid byte sequence" in reason:
            reason += engine.locate_invalid_text(table)
        raise BadData(f"{source.name}.{table.name}", reason) from exc
    except Exception as exc:
        translated = engine.translate_error(exc, f"{source.name}.{table.name}")
        if translated is not None:
            raise translated from exc
        raise
    finally:
        result.duration_s = time.perf_counter() - started
        if result.source_held_s is None:
            result.source_held_s = result.duration_s
        engine.close()
        with contextlib.suppress(psycopg2.Error):
            warehouse_conn.close()
    return result


def _with_declared_indexes(
    warehouse: WarehouseEngine, raw: RawTable, table: TableConfig, result: TableResult
) -> RawTable:
    """The raw table with its declared indexes, each column checked against the table."""
    if not table.indexes:
        return raw
    known = [column.name for column in raw.columns]
    for columns in table.indexes:
        for column in columns:
            if column not in known:
                raise DeclarationError(
                    result.name,
                    f"indexes names {column!r}, which is not a column of the table; "
                    "correct it or remove it from indexes",
                    candidates=known,
                )
    if not warehouse.has_indexes:
        result.warnings.append(
            f"{result.name}: a {warehouse.kind} warehouse has no indexes; the declared "
            "indexes are not built"
        )
        return raw
    return replace(raw, indexes=table.indexes)


def _read_incremental(
    engine: SourceEngine,
    warehouse: WarehouseEngine,
    wh: psycopg2.extensions.cursor,
    table: TableConfig,
    raw: RawTable,
    window: ReadWindow,
    previous: Mark | None,
    result: TableResult,
    merges: list[Callable[[], None]],
) -> None:
    """Stream the window above the mark into the warehouse; the merge is queued.

    The source is read once: the rows go straight into COPY (its row count is the
    rows read), and the new mark and the rows re-read at the old mark are taken from
    the rows staged in the warehouse — exactly the rows of this read's snapshot —
    after the source is released.
    """
    assert table.cursor is not None
    result.mark_before = previous.mark if previous else None
    produce = partial(engine.copy_out, table.name, raw.columns, cursor=table.cursor, window=window)
    names = [column.name for column in raw.columns]
    empty = warehouse.is_empty(wh, raw)
    # The source itself guarantees unique keys (a primary key or unique index): a first
    # load can COPY straight into the raw table. Otherwise (views, declared keys) rows
    # go through the stage, which is checked for one key holding different rows.
    unique_at_source = empty and engine.keys_unique(table.name, table.primary_key)
    if unique_at_source and warehouse.direct_first_load:
        # First load into an empty table: COPY straight in (indexes come after).
        result.rows_read = _copy_between(engine, warehouse, produce, wh, raw.identifier, names)
        result.inserted = result.rows_read
        if not result.rows_read:
            return

        def index_first_load() -> None:
            _take_window_stats(warehouse, wh, raw.identifier, table.cursor, result)
            warehouse.ensure_indexes(wh, raw)
            warehouse.analyze(wh, raw.identifier)

        merges.append(index_first_load)
        return
    warehouse.create_stage(wh, raw)
    result.rows_read = _copy_between(engine, warehouse, produce, wh, sql.Identifier(STAGE), names)
    if not result.rows_read:
        return
    if not empty:
        unique_at_source = engine.keys_unique(table.name, table.primary_key)
    if not unique_at_source and not empty:
        # A new row may repeat the key of an old one below the window: ask the source.
        split = engine.find_split_key(table, raw.columns, window)
        if split is not None:
            raise NonUniqueKey(result.name, table.primary_key, *split)

    def merge() -> None:
        _take_window_stats(warehouse, wh, sql.Identifier(STAGE), table.cursor, result)
        if not unique_at_source and empty:
            # A first load's stage is the whole table (later ones asked the source).
            warehouse.check_unique_keys(wh, raw, where=result.name)
        warehouse.ensure_indexes(wh, raw)
        warehouse.analyze(wh, sql.Identifier(STAGE))
        result.inserted, result.updated = warehouse.merge(wh, raw, newest_by=table.cursor)

    merges.append(merge)


def _take_window_stats(
    warehouse: WarehouseEngine,
    wh: psycopg2.extensions.cursor,
    relation: sql.Identifier,
    cursor: str,
    result: TableResult,
) -> None:
    """The read's new mark and re-read rows, from the rows it staged."""
    _, maximum, reread = warehouse.window_stats(wh, relation, cursor, result.mark_before)
    result.reread, result.mark_after = reread, aware(maximum)


def _read_bulk(
    engine: SourceEngine,
    warehouse: WarehouseEngine,
    wh: psycopg2.extensions.cursor,
    raw: RawTable,
    result: TableResult,
    merges: list[Callable[[], None]],
) -> None:
    names = [column.name for column in raw.columns]
    warehouse.create_stage(wh, raw)
    produce = partial(engine.copy_out, raw.name, raw.columns)
    result.rows_read = _copy_between(engine, warehouse, produce, wh, sql.Identifier(STAGE), names)
    # Asked of the source while its transaction is open; the check runs in the merge.
    keys_unique = not raw.primary_key or engine.keys_unique(raw.name, raw.primary_key)

    def merge() -> None:
        warehouse.ensure_indexes(wh, raw)
        warehouse.analyze(wh, sql.Identifier(STAGE))
        if raw.primary_key:
            if not keys_unique:
                warehouse.check_unique_keys(wh, raw, where=result.name)
            result.inserted, result.updated = warehouse.merge(wh, raw)
            result.deleted = warehouse.mark_missing_deleted(wh, raw, keys=STAGE)
        else:
            result.inserted, result.deleted = warehouse.replace(wh, raw)

    merges.append(merge)


DELETE_STAGE = "_tidewater_stage_ranges"


def _read_deletes(
    engine: SourceEngine,
    warehouse: WarehouseEngine,
    wh: psycopg2.extensions.cursor,
    raw: RawTable,
    names: list[str],
    result: TableResult,
    merges: list[Callable[[], None]],
) -> None:
    """Compare key checksums per range; re-read only the differing ranges, and queue
    their reconciliation.

    The warehouse side is summarized as it will be after the window's merge — the
    live raw keys and the keys staged — so the comparison needs no merge first and
    the source is released before any merging. Both sides hash keys the engine's
    way (``engine.checksum``).
    """
    in_source = engine.key_summary(raw)
    keys = sql.SQL(", ").join(map(sql.Identifier, raw.primary_key))
    staged = sql.SQL("union select {keys} from {stage}").format(
        keys=keys, stage=sql.Identifier(STAGE)
    )
    wh.execute("select to_regclass(%s) is not null", (STAGE,))
    after_merge = sql.SQL(
        "(select {keys} from {raw} where _deleted_at is null {staged}) as after_merge"
    ).format(keys=keys, raw=raw.identifier, staged=staged if wh.fetchone()[0] else sql.SQL(""))
    in_warehouse = summarize(wh, raw, after_merge, live_only=False, checksum=engine.checksum)
    differing = differing_buckets(in_source, in_warehouse)
    if not differing:
        return
    warehouse.create_stage(wh, raw, name=DELETE_STAGE)
    produce = partial(engine.copy_out, raw.name, raw.columns, buckets=(raw, differing))
    result.reread += _copy_between(
        engine, warehouse, produce, wh, sql.Identifier(DELETE_STAGE), names
    )
    keys_unique = engine.keys_unique(raw.name, raw.primary_key)

    def reconcile() -> None:
        if not keys_unique:
            warehouse.check_unique_keys(wh, raw, where=result.name, stage=DELETE_STAGE)
        warehouse.analyze(wh, sql.Identifier(DELETE_STAGE))
        inserted, updated = warehouse.merge(wh, raw, stage=DELETE_STAGE)
        result.inserted += inserted
        result.updated += updated
        result.deleted += warehouse.mark_missing_deleted(
            wh,
            raw,
            keys=DELETE_STAGE,
            within=bucket_filter(raw, differing, "target", checksum=engine.checksum),
        )

    merges.append(reconcile)


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

    engine = engine_for(source.kind)

    def transient(exc: BaseException) -> bool:
        return is_transient(exc) or engine.is_transient(exc)

    retrying = Retrying(
        retry=retry_if_exception(transient),
        stop=stop_after_attempt(options.retries),
        wait=wait_exponential_jitter(multiplier=options.backoff_initial, max=options.backoff_max),
        before=count,
        reraise=True,
    )
    started = datetime.now(UTC)
    loader = partial(load_table, options=options)
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
            f"{source.name}.{table.name}", exc, transient=transient(exc), attempts=attempts
        ) from exc
    return replace(result, attempts=attempts, started_at=started)


def load_all(
    sources: tuple[SourceConfig, ...],
    *,
    source_connectors: dict[str, ConnectFn],
    connect_warehouse: ConnectFn,
    options: LoadOptions = DEFAULT_OPTIONS,
    on_done: Callable[[TableResult], None] | None = None,
    only_tables: set[str] | None = None,
    prepared: bool = False,
) -> list[TableResult]:
    """Load every declared table with a bounded pool of workers.

    By default the first failure stops the run: tables not yet started are
    skipped. With ``keep_going`` the others still load. Returns every table's
    result, failed ones included; see `raise_on_failure`. ``prepared``: the caller
    has run `prepare_warehouse` already (to learn which raw schemas are new).
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
    if not prepared:
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
        try:
            for future in as_completed(futures):
                results.append(_outcome(future, *futures[future], batch_id=batch_id))
                if on_done is not None:
                    on_done(results[-1])
        except KeyboardInterrupt:
            # Tables not started are skipped; those loading finish or roll back whole.
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results


def _outcome(
    future: Future[TableResult], source: SourceConfig, table: TableConfig, *, batch_id: str
) -> TableResult:
    try:
        return future.result()
    except TableLoadFailed as failure:
        return TableResult(
            source.name,
            table.name,
            table.mode,
            batch_id,
            status="failed",
            error=str(failure),
            error_class="transient" if failure.transient else "terminal",
            attempts=failure.attempts,
            failure=failure,
        )


def prepare_warehouse(
    connect_warehouse: ConnectFn, sources: tuple[SourceConfig, ...]
) -> tuple[str, ...]:
    """Create the mark table once, before tables load in parallel. Raw schemas are
    created by the first load into each, in its own transaction (`ensure_schema`).

    Returns the raw schemas that do not exist yet: the ones this run may create,
    which then need the role spec's grants (`control.setup.grant_new_schemas`)."""
    conn = connect_warehouse()
    try:
        # The warehouse says what it is (Redshift reports PostgreSQL 8.0.2).
        warehouse = warehouse_for("redshift") if is_redshift(conn) else PostgresWarehouse()
        with conn.cursor() as cur:
            warehouse.hold_ddl(cur)
            present = warehouse.existing_schemas(cur, [source.raw_schema for source in sources])
            missing = tuple(s.raw_schema for s in sources if s.raw_schema not in present)
            warehouse.ensure_state_table(cur)
        conn.commit()
    finally:
        conn.close()
    return missing


def raise_on_failure(results: list[TableResult]) -> None:
    """Raise `LoadRunFailed` if any table failed (so nothing downstream runs)."""
    failures = [r.failure for r in results if r.failure is not None]
    if failures:
        raise LoadRunFailed(failures)


def connector(dsn: str, *, what: str) -> ConnectFn:
    return lambda: connect(dsn, what=what, application_name="tidewater-loader")
