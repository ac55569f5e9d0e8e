"""MySQL and MariaDB as a source (``kind: mysql``).

One load reads in one ``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY``
(InnoDB's repeatable read): the read window, its largest cursor value, the key
checks and the delete-detection checksums all come from that snapshot, so the mark
is computed from exactly the rows that were copied.

Late commits. Just before the snapshot the engine looks at
``information_schema.innodb_trx``: every InnoDB transaction open then, with its
``trx_started``. A row not in the snapshot was written by a transaction open at
the look (its rows carry cursor values at or above the statement start of its
first write, which is at or just below ``trx_started``) or started later. So
`loaders.extract.plan_next_read`, shared with PostgreSQL, holds the next read back
to the oldest of them. Two things measured on MariaDB 10.11 shape the bound:
``trx_started`` has whole seconds only and is in the server's system time zone
whatever the session's; it is read as ``UNIX_TIMESTAMP(trx_started)`` under
``time_zone = 'SYSTEM'`` (an instant), and every start (and the look's own time)
is moved back by `CLOCK_MARGIN` — one second — which covers the truncated
fraction and a statement that began just before its transaction registered.
Reading ``innodb_trx`` needs the PROCESS privilege; without it the look is
incomplete, the mark is held (``late_commit_safety`` says 'held: …' or
'unproven: …' and names the grant), exactly like a PostgreSQL source whose open
transactions cannot all be seen.

Rows are read with an unbuffered (server-side, ``SSCursor``) cursor, so memory
stays flat, and written as PostgreSQL COPY text into the same pipe the PostgreSQL
source uses. The server itself makes each row one COPY text line (`copy_line`:
values escaped, ``\\N`` for NULL, bytea as ``\\x`` hex, floats exact), so Python
only joins lines; the driver converts nothing. The driver is mysqlclient
(``MySQLdb``, C) when importable, else PyMySQL (pure Python, works after ``pip``
alone, about 2.5x slower to read).

Types (source → warehouse): see `warehouse_type`; zero dates (``0000-00-00``) are
refused with `ZeroDate`, never changed silently.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import IO, Any

from loaders.catalog import Column
from loaders.config import SourceConfig, TableConfig
from loaders.deletes import HASH_BUCKETS, MAX_SPELLED_RANGES, RANGE_SIZE, ranged_key
from loaders.dsn import MySQLDsn, parse_mysql_dsn
from loaders.exceptions import (
    BadData,
    DeclarationError,
    LoaderError,
    SourceLocked,
    SourceStatementTimeout,
    SourceUnreachable,
)
from loaders.extract import ALL_ROWS, ReadWindow, Snapshot
from loaders.load import RawTable
from loaders.results import DEFAULT_OPTIONS, ConnectFn, LoadOptions
from loaders.source_engine import SourceEngine

# trx_started has whole seconds, and a write's NOW() is its statement's start, which
# can lie a moment before its transaction shows in innodb_trx.
CLOCK_MARGIN = timedelta(seconds=1)
FETCH_ROWS = 5000

COLUMNS = """
select column_name, data_type, column_type, numeric_precision, numeric_scale,
    character_maximum_length
from information_schema.columns
where table_schema = %s and table_name = %s
order by ordinal_position
"""
TABLES = """
select table_name from information_schema.tables where table_schema = %s order by table_name
"""
# MariaDB stores JSON as longtext with a json_valid() check named after the column.
JSON_CHECKS = """
select constraint_name from information_schema.check_constraints
where constraint_schema = %s and table_name = %s
    and check_clause = concat('json_valid(`', replace(constraint_name, '`', '``'), '`)')
"""
# Unique indexes whose columns are all NOT NULL (a primary key among them).
UNIQUE_KEYS = """
select statistics.index_name, statistics.column_name, columns.is_nullable
from information_schema.statistics as statistics
inner join information_schema.columns as columns
    on columns.table_schema = statistics.table_schema
    and columns.table_name = statistics.table_name
    and columns.column_name = statistics.column_name
where statistics.table_schema = %s and statistics.table_name = %s
    and statistics.non_unique = 0
order by statistics.index_name, statistics.seq_in_index
"""
LOOK = "select unix_timestamp(now(6))"
OPEN_TRANSACTIONS = """
select trx_id, trx_mysql_thread_id, unix_timestamp(trx_started)
from information_schema.innodb_trx
where trx_mysql_thread_id <> connection_id()
"""
NO_PROCESS_PRIVILEGE = (
    "the source login lacks the PROCESS privilege, so the open InnoDB transactions "
    "(information_schema.innodb_trx) cannot be seen (grant it: GRANT PROCESS ON *.* TO "
    "the login)"
)

# Error numbers (MySQL and MariaDB share them).
ER_LOCK_WAIT_TIMEOUT = 1205
ER_LOCK_DEADLOCK = 1213
ER_SPECIFIC_ACCESS_DENIED = 1227
ER_STATEMENT_TIMEOUT = 1969  # MariaDB max_statement_time
ER_QUERY_TIMEOUT = 3024  # MySQL max_execution_time
TRANSIENT_ERRORS = frozenset(
    {
        ER_LOCK_WAIT_TIMEOUT,
        ER_LOCK_DEADLOCK,
        1040,  # too many connections
        1053,  # server shutdown in progress
        1927,  # connection killed
        2002,  # can't connect (socket)
        2003,  # can't connect (TCP)
        2006,  # server has gone away
        2013,  # lost connection during query
        4031,  # disconnected by the server (idle)
    }
)


class ZeroDate(BadData):
    """A date or datetime column holds MySQL's zero date (or a zero month or day),
    which no PostgreSQL date can hold."""

    def __init__(self, table: str, column: str, value: str) -> None:
        self.column = column
        self.value = value
        self.table = table
        LoaderError.__init__(
            self,
            f"{table}.{column} holds the zero date {value!r}, which no PostgreSQL date "
            "can hold; nothing was written for this table. Set those values to NULL or a "
            f"real date at the source (e.g. update ... set {column} = null where "
            f"{column} = '0000-00-00'), or load a view that maps them",
        )
        self.reason = str(self)


class NoMySQLDriver(LoaderError):
    def __init__(self) -> None:
        super().__init__(
            "a kind: mysql source needs a MySQL driver: pip install -e '.[mysql]' "
            "(mysqlclient; needs libmariadb-dev or default-libmysqlclient-dev and "
            "pkg-config to build), or pip install PyMySQL (pure Python, slower)"
        )


@dataclass(frozen=True)
class Driver:
    """A DB-API module and its unbuffered cursor."""

    name: str
    module: ModuleType
    streaming_cursor: type

    def error_code(self, exc: BaseException) -> int | None:
        if isinstance(exc, self.module.Error) and exc.args and isinstance(exc.args[0], int):
            return int(exc.args[0])
        return None


def load_driver(prefer: str | None = None) -> Driver:
    """mysqlclient when importable, else PyMySQL; ``prefer`` (or the environment
    variable ``TIDEWATER_MYSQL_DRIVER``: mysqlclient or pymysql) forces one."""
    order = ["mysqlclient", "pymysql"]
    prefer = prefer or os.environ.get("TIDEWATER_MYSQL_DRIVER") or None
    if prefer:
        order = [prefer]
    for name in order:
        try:
            if name == "mysqlclient":
                import MySQLdb
                import MySQLdb.cursors

                return Driver(name, MySQLdb, MySQLdb.cursors.SSCursor)
            import pymysql
            import pymysql.cursors

            return Driver(name, pymysql, pymysql.cursors.SSCursor)
        except ImportError:
            continue
    raise NoMySQLDriver


def _encoders(driver: Driver) -> dict[Any, Any]:
    """The driver's Python → SQL literal converters, without its SQL → Python ones:
    values then arrive as the server's own text, as bytes."""
    if driver.name == "mysqlclient":
        from MySQLdb.converters import conversions
    else:
        from pymysql.converters import conversions
    return {key: value for key, value in conversions.items() if not isinstance(key, int)}


def connect_mysql(dsn: MySQLDsn, *, driver: Driver, where: str, env: str, source: str) -> Any:
    """One connection: utf8mb4, values as raw bytes, autocommit on."""
    kwargs: dict[str, Any] = {
        "host": dsn.host,
        "port": dsn.port,
        "user": dsn.user,
        "password": dsn.password,
        "charset": "utf8mb4",
        "use_unicode": False,
        "conv": _encoders(driver),
        "connect_timeout": 10,
        "autocommit": True,
    }
    if dsn.database:
        kwargs["database"] = dsn.database
    if "unix_socket" in dsn.options:
        kwargs["unix_socket"] = dsn.options["unix_socket"]
    try:
        return driver.module.connect(**kwargs)
    except driver.module.Error as exc:
        code = driver.error_code(exc)
        reason = " ".join(str(exc.args[-1] if exc.args else exc).split())
        if dsn.password:
            reason = reason.replace(dsn.password, "***")
        raise SourceUnreachable(source, env, reason, where, code=code) from None


def quote(name: str) -> str:
    """A MySQL identifier in backticks (a backtick inside doubled)."""
    return "`" + name.replace("`", "``") + "`"


def warehouse_type(data_type: str, column_type: str, precision: Any, scale: Any) -> str:
    """The PostgreSQL warehouse type for a MySQL/MariaDB column.

    Unsigned integers widen one step (``bigint unsigned`` → ``numeric(20,0)``);
    ``tinyint(1)`` is MySQL's boolean; every datetime and timestamp gets
    microseconds; ``time`` (range ±838:59:59) is an ``interval``.
    """
    data_type = data_type.lower()
    column_type = column_type.lower()
    unsigned = "unsigned" in column_type
    if data_type == "tinyint":
        return "boolean" if column_type == "tinyint(1)" else "smallint"
    integers = {
        "smallint": ("smallint", "integer"),
        "mediumint": ("integer", "integer"),
        "int": ("integer", "bigint"),
        "integer": ("integer", "bigint"),
        "bigint": ("bigint", "numeric(20,0)"),
    }
    if data_type in integers:
        return integers[data_type][1 if unsigned else 0]
    if data_type in ("decimal", "numeric"):
        return f"numeric({int(precision)},{int(scale)})"
    simple = {
        "float": "real",
        "double": "double precision",
        "real": "double precision",
        "date": "date",
        "datetime": "timestamp without time zone",
        "timestamp": "timestamp with time zone",
        "time": "interval",
        "year": "smallint",
        "json": "jsonb",
        "binary": "bytea",
        "varbinary": "bytea",
        "tinyblob": "bytea",
        "blob": "bytea",
        "mediumblob": "bytea",
        "longblob": "bytea",
    }
    if data_type in simple:
        return simple[data_type]
    if data_type == "bit":
        width = re.search(r"\((\d+)\)", column_type)
        return f"bit({width.group(1) if width else 1})"
    if data_type in ("char", "varchar"):
        width = re.search(r"\((\d+)\)", column_type)
        # varchar, not char: PostgreSQL pads char(n) values, MySQL strips them
        return f"character varying({width.group(1)})" if width else "text"
    # text types, enum, set (comma-separated), geometry (as WKT), anything else
    return "text"


# utf8mb4 literals, free of the sql_mode's backslash rules
_NULL = "_utf8mb4 x'5c4e'"  # \N
_TAB = "_utf8mb4 x'09'"
_ESCAPES = (  # COPY text escapes: backslash first
    ("_utf8mb4 x'5c'", "_utf8mb4 x'5c5c'"),
    ("_utf8mb4 x'09'", "_utf8mb4 x'5c74'"),
    ("_utf8mb4 x'0a'", "_utf8mb4 x'5c6e'"),
    ("_utf8mb4 x'0d'", "_utf8mb4 x'5c72'"),
)
_TEXT_TYPES = ("text", "character varying", "jsonb")
_DATE_TYPES = ("date", "timestamp without time zone", "timestamp with time zone")
_GEOMETRY = ("geometry", "point", "linestring", "polygon", "multipoint", "multilinestring")


def select_expression(column: Column) -> str:
    """What the server selects for a column: its value as PostgreSQL's COPY text
    reads it (escaped, ``\\N`` for NULL), in utf8mb4."""
    name = quote(column.name)
    target = column.warehouse_type
    if target == "bytea":
        value = f"concat(_utf8mb4 x'5c5c', 'x', hex({name}))"  # COPY text \\x…: bytea hex
    elif target.startswith("bit("):
        value = f"lpad(bin({name}), {int(target[4:-1])}, '0')"
    elif target == "real":
        # float's own text may round to 6 digits; as a double it is exact, and
        # PostgreSQL rounds it back to the same single-precision value.
        value = f"cast({name} as double)"
    elif target == "timestamp with time zone":
        value = f"concat({name}, '+00')"  # read with time_zone = '+00:00'
    elif target.startswith(_TEXT_TYPES):
        source = f"st_astext({name})" if column.declared_type in _GEOMETRY else name
        value = f"convert({source} using utf8mb4)"
        for old, new in _ESCAPES:
            value = f"replace({value}, {old}, {new})"
    else:
        value = name
    return f"ifnull({value}, {_NULL})"


def copy_line(columns: Sequence[Column]) -> str:
    """One COPY text line per row, made by the server."""
    return "concat_ws({}, {})".format(_TAB, ", ".join(map(select_expression, columns)))


def _is_zero_date(value: bytes) -> bool:
    return value[:4] == b"0000" or value[5:7] == b"00" or value[8:10] == b"00"


def find_zero_date(
    batch: bytes, lines: Sequence[bytes], columns: Sequence[Column]
) -> tuple[str, str] | None:
    """The first (column, value) holding a zero date (or a zero month or day), which
    no PostgreSQL date can hold. One scan of the batch finds none in the usual case;
    only then are lines split."""
    dates = [i for i, c in enumerate(columns) if c.warehouse_type in _DATE_TYPES]
    if not dates:
        return None
    if b"0000-" not in batch and b"-00" not in batch:
        return None
    for line in lines:
        fields = line.split(b"\t")
        for i in dates:
            if fields[i] != b"\\N" and _is_zero_date(fields[i]):
                return columns[i].name, fields[i].decode()
    return None


class RowTooLong(BadData):
    """A row's COPY text is longer than the server's max_allowed_packet."""

    def __init__(self, table: str) -> None:
        self.table = table
        LoaderError.__init__(
            self,
            f"{table}: a row is longer than the source server's max_allowed_packet as "
            "COPY text; nothing was written for this table. Raise max_allowed_packet "
            "on the MySQL/MariaDB server (e.g. SET GLOBAL max_allowed_packet = 1073741824)",
        )
        self.reason = str(self)


class MySQLSource(SourceEngine):
    """A MySQL or MariaDB source (``kind: mysql``); InnoDB tables."""

    kind = "mysql"
    copy_format = "text"
    checksum = "md5"
    sees_open_transactions = True
    detects_deletes = True

    def __init__(
        self, source: SourceConfig, connect: ConnectFn, *, options: LoadOptions = DEFAULT_OPTIONS
    ) -> None:
        super().__init__(source, connect, options=options)
        self.database = source.source_schema or self._value("select database()")
        if not self.database:
            raise DeclarationError(
                f"source {source.name}",
                f"names no database: add one to {source.dsn_env} "
                "(mysql://user:password@host:3306/database) or set source_schema",
            )
        self._columns: dict[str, tuple[Column, ...]] = {}

    # -- connecting ------------------------------------------------------------

    @classmethod
    def connector(cls, source: SourceConfig, dsn: str) -> ConnectFn:
        parsed = parse_mysql_dsn(dsn, env=source.dsn_env)
        driver = load_driver()

        def connect() -> Any:
            return connect_mysql(
                parsed,
                driver=driver,
                where=parsed.redacted,
                env=source.dsn_env,
                source=source.name,
            )

        return connect

    @classmethod
    def is_transient(cls, exc: BaseException) -> bool:
        if isinstance(exc, SourceUnreachable):
            return exc.code in TRANSIENT_ERRORS
        code = _error_code(exc)
        if code is not None:
            return code in TRANSIENT_ERRORS
        # A connection lost without an error number (PyMySQL's InterfaceError(0, ''))
        return type(exc).__name__ == "InterfaceError" and type(exc).__module__.startswith(
            ("MySQLdb", "pymysql")
        )

    # -- statements --------------------------------------------------------------

    def _execute(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.connection.cursor()
        try:
            cur.execute(statement, tuple(params) if params else None)
            return [tuple(_text(v) for v in row) for row in cur.fetchall()]
        finally:
            cur.close()

    def _value(self, statement: str, params: Sequence[Any] = ()) -> Any:
        rows = self._execute(statement, params)
        return rows[0][0] if rows else None

    def _configure(self) -> None:
        """Session settings: timeouts, so a read never queues behind an application's
        metadata lock for long and never runs unbounded; an idle consumer (the
        warehouse) may keep the streaming read open as long as the statement may run."""
        lock = max(1, int(self.source.lock_timeout.total_seconds()))
        statement = self.source.statement_timeout.total_seconds()
        self._execute("set session lock_wait_timeout = %s", (lock,))
        self._execute("set session net_write_timeout = %s", (max(60, int(statement)),))
        try:
            self._execute("set session max_statement_time = %s", (statement,))  # MariaDB
        except Exception:
            self._execute("set session max_execution_time = %s", (int(statement * 1000),))

    # -- one consistent read -----------------------------------------------------

    def open_snapshot(self, table: TableConfig) -> Snapshot:
        self._configure()
        # trx_started is in the server's system time zone: read it as an instant.
        self._execute("set session time_zone = 'SYSTEM'")
        looked_at = _instant(self._value(LOOK)) - CLOCK_MARGIN
        complete, reason = True, None
        opened: dict[str, datetime | None] = {}
        try:
            rows = self._execute(OPEN_TRANSACTIONS)
        except Exception as exc:
            if _error_code(exc) != ER_SPECIFIC_ACCESS_DENIED:
                raise
            complete, reason = False, NO_PROCESS_PRIVILEGE
        else:
            for trx_id, thread_id, started in rows:
                start = _instant(started) - CLOCK_MARGIN if started is not None else None
                opened[f"{thread_id}:{trx_id}"] = start
        self._execute("set session time_zone = '+00:00'")
        self._execute("set session transaction isolation level repeatable read")
        self._execute("start transaction with consistent snapshot, read only")
        return Snapshot(looked_at, opened, complete=complete, incomplete_reason=reason)

    def columns(self, table: TableConfig) -> tuple[Column, ...]:
        where = f"{self.source.name}.{table.name}"
        rows = self._execute(COLUMNS, (self.database, table.name))
        if not rows:
            raise DeclarationError(
                where,
                f"no table or view {table.name!r} in database {self.database!r} of the source",
                candidates=[row[0] for row in self._execute(TABLES, (self.database,))],
            )
        json_columns: set[str] = set()
        try:
            json_columns = {
                row[0] for row in self._execute(JSON_CHECKS, (self.database, table.name))
            }
        except (
            Exception
        ) as exc:  # MySQL's check_constraints has no table_name; JSON is its own type
            if _error_code(exc) is None:
                raise
        columns = []
        for name, data_type, column_type, precision, scale, _length in rows:
            target = warehouse_type(data_type, column_type, precision, scale)
            if name in json_columns and target == "text":
                target = "jsonb"
            columns.append(Column(name, str(data_type).lower(), target))
        names = [column.name for column in columns]
        for key in table.primary_key:
            if key not in names:
                raise DeclarationError(
                    where, f"primary_key column {key!r} does not exist", candidates=names
                )
        if table.cursor and table.cursor not in names:
            raise DeclarationError(
                where, f"cursor column {table.cursor!r} does not exist", candidates=names
            )
        self._columns[table.name] = tuple(columns)
        return tuple(columns)

    def _relation(self, table: str) -> str:
        return f"{quote(self.database)}.{quote(table)}"

    def _filter(self, cursor: str | None, window: ReadWindow) -> tuple[str, list[Any]]:
        if cursor is None or window.read_from is None:
            return "true", []
        operator = ">" if window.after else ">="
        return f"{quote(cursor)} {operator} %s", [_literal_time(window.read_from)]

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
        condition, params = self._filter(cursor, window)
        if buckets is not None:
            raw, ids = buckets
            condition = f"({condition}) and ({self._bucket_filter(raw, ids)})"
        statement = f"select {copy_line(columns)} from {self._relation(table)} where {condition}"
        where = f"{self.source.name}.{table}"
        for rows in self._stream(statement, params):
            lines = [row[0] for row in rows]
            if None in lines:
                raise RowTooLong(where)
            lines.append(b"")
            batch = b"\n".join(lines)
            zero = find_zero_date(batch, lines[:-1], columns)
            if zero is not None:
                raise ZeroDate(where, *zero)
            sink.write(batch)

    def _stream(self, statement: str, params: Sequence[Any]) -> Iterator[list[Any]]:
        driver = load_driver()
        streaming = _streaming_cursor(self.connection, driver)
        cur = self.connection.cursor(streaming)
        try:
            cur.execute(statement, tuple(params) if params else None)
            while True:
                rows = cur.fetchmany(FETCH_ROWS)
                if not rows:
                    break
                yield rows
        except BaseException:
            # Closing an unbuffered cursor reads the rest of its result first: drop the
            # connection instead (the load is failing; its snapshot goes with it).
            with contextlib.suppress(Exception):
                self.connection.close()
            raise
        cur.close()

    def keys_unique(self, table: str, keys: Sequence[str]) -> bool:
        if not keys:
            return False
        indexes: dict[str, list[tuple[str, str]]] = {}
        for index, column, nullable in self._execute(UNIQUE_KEYS, (self.database, table)):
            indexes.setdefault(index, []).append((column, nullable))
        return any(
            all(nullable == "NO" for _, nullable in columns)
            and {column for column, _ in columns} <= set(keys)
            for columns in indexes.values()
        )

    def find_split_key(
        self, table: TableConfig, columns: Sequence[Column], window: ReadWindow
    ) -> tuple[list[object], int, int] | None:
        condition, params = self._filter(table.cursor, window)
        keys = ", ".join(map(quote, table.primary_key))
        row = "md5(concat_ws(',', {}))".format(
            ", ".join(f"quote({quote(column.name)})" for column in columns)
        )
        relation = self._relation(table.name)
        rows = self._execute(
            f"select {keys}, versions, count(*) over () from ("
            f"select {keys}, count(distinct {row}) as versions from {relation} "
            f"where ({keys}) in (select {keys} from {relation} where {condition}) "
            f"group by {keys} having count(distinct {row}) > 1) as split "
            "order by versions desc limit 1",
            params,
        )
        if not rows:
            return None
        *example, versions, count = rows[0]
        return list(example), int(versions), int(count)

    # -- delete detection (mirrors loaders.deletes with checksum 'md5') ------------

    def _key_text(self, raw: RawTable) -> str:
        return "concat_ws('|', {})".format(", ".join(map(quote, raw.primary_key)))

    def _hash(self, raw: RawTable) -> str:
        return f"cast(conv(substr(md5({self._key_text(raw)}), 1, 8), 16, 10) as unsigned)"

    def _bucket_of(self, raw: RawTable) -> str:
        ranged = ranged_key(raw)
        if ranged is not None:
            return f"({quote(ranged)} div {RANGE_SIZE})"  # truncates like PostgreSQL's /
        return f"mod({self._hash(raw)}, {HASH_BUCKETS})"

    def _bucket_filter(self, raw: RawTable, ids: Sequence[int]) -> str:
        ranged = ranged_key(raw)
        if ranged is not None and len(ids) <= MAX_SPELLED_RANGES:
            column = quote(ranged)
            return " or ".join(
                f"({column} >= {int(b) * RANGE_SIZE} and {column} < {(int(b) + 1) * RANGE_SIZE})"
                for b in ids
            )
        return "{} in ({})".format(self._bucket_of(raw), ", ".join(str(int(b)) for b in ids))

    def key_summary(self, raw: RawTable) -> dict[int, tuple[int, int]]:
        rows = self._execute(
            f"select {self._bucket_of(raw)} as bucket, count(*), sum({self._hash(raw)}) "
            f"from {self._relation(raw.name)} group by 1"
        )
        return {int(bucket): (int(count), int(total)) for bucket, count, total in rows}

    # -- errors and the end ------------------------------------------------------

    def translate_error(self, exc: BaseException, where: str) -> BaseException | None:
        code = _error_code(exc)
        if code == ER_LOCK_WAIT_TIMEOUT:
            return SourceLocked(where, self.source.lock_timeout)
        if code in (ER_STATEMENT_TIMEOUT, ER_QUERY_TIMEOUT):
            return SourceStatementTimeout(where, self.source.statement_timeout)
        return None

    def end_read(self) -> None:
        self.connection.rollback()


def _error_code(exc: BaseException) -> int | None:
    module = type(exc).__module__
    if not module.startswith(("MySQLdb", "pymysql", "_mysql")):
        return None
    if exc.args and isinstance(exc.args[0], int):
        return int(exc.args[0])
    return None


def _streaming_cursor(connection: Any, driver: Driver) -> type:
    """The unbuffered cursor class of the driver that opened ``connection``."""
    if type(connection).__module__.startswith("pymysql"):
        import pymysql.cursors

        return pymysql.cursors.SSCursor
    return driver.streaming_cursor


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes | bytearray) else value


def _instant(value: Any) -> datetime:
    """A UNIX timestamp (as the server's text) as an aware UTC datetime."""
    return datetime.fromtimestamp(float(value), tz=UTC)


def _literal_time(value: datetime | None) -> str | None:
    """A mark as MySQL compares it: UTC, without an offset."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(sep=" ", timespec="microseconds")


def connect_fn(dsn: str, *, name: str = "source", env: str = "DSN") -> Callable[[], Any]:
    """A connector for a URL outside any declaration (tests, benchmarks)."""
    parsed = parse_mysql_dsn(dsn, env=env)
    driver = load_driver()
    return lambda: connect_mysql(parsed, driver=driver, where=parsed.redacted, env=env, source=name)
