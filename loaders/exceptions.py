"""Errors raised by the loaders. Each keeps its inputs and says what to do next."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from tidewater.exceptions import TidewaterError


class LoaderError(TidewaterError):
    """Root of every loader error."""


class DeclarationError(LoaderError):
    """The table declaration (dbt sources YAML, ``meta.tidewater``) is invalid."""

    def __init__(self, where: str, problem: str, *, candidates: Sequence[str] = ()) -> None:
        self.where = where
        self.problem = problem
        self.candidates = tuple(candidates)
        hint = f"; choose one of: {', '.join(self.candidates)}" if self.candidates else ""
        super().__init__(f"{where}: {problem}{hint}")


class MalformedDsn(LoaderError):
    """A source's DSN environment variable does not hold a connection string.

    The message names the variable, never its value (which may hold a password).
    """

    def __init__(self, env: str, problem: str, *, example: str | None = None) -> None:
        self.env = env
        self.problem = problem
        self.example = example
        if example:
            hint = f"set it to a URL like {example}"
        else:
            hint = (
                "set it to a URL like postgresql://user:password@host:5432/dbname, or to "
                "key=value pairs like 'host=db.internal port=5432 dbname=app user=reader'"
            )
        super().__init__(f"{env} is not a connection string ({problem}); {hint}")


class SchemaConflict(LoaderError):
    """A source column changed in a way the raw table cannot follow."""

    def __init__(self, table: str, column: str, raw_type: str, source_type: str) -> None:
        self.table = table
        self.column = column
        self.raw_type = raw_type
        self.source_type = source_type
        super().__init__(
            f"{table}.{column} changed type from {raw_type} to {source_type}, which is not "
            f"a widening; nothing was written. Rename the column in the source, or alter "
            f"{table}.{column} in the warehouse to a type that holds both, then load again"
        )


class BadData(LoaderError):
    """A value could not be carried to the warehouse."""

    def __init__(self, table: str, reason: str) -> None:
        self.table = table
        self.reason = reason
        super().__init__(f"{table}: {reason}; nothing was written for this table")


class NonUniqueKey(LoaderError):
    """The declared primary key holds different rows under one value in one read."""

    def __init__(
        self, table: str, keys: Sequence[str], example: Sequence[object], versions: int, count: int
    ) -> None:
        self.table = table
        self.keys = tuple(keys)
        self.example = tuple(example)
        self.versions = versions
        self.count = count
        shown = ", ".join(
            f"{key}={value}" for key, value in zip(self.keys, self.example, strict=True)
        )
        super().__init__(
            f"{table}: primary_key ({', '.join(self.keys)}) is not unique in the source: "
            f"{count} key value(s) hold different rows in one consistent read, e.g. {shown} "
            f"({versions} different rows); nothing was written. Declare a key that is unique "
            "there (a primary key or unique index at the source guarantees it), or load the "
            "table with mode: bulk and no primary_key"
        )


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g} s"


class SourceLocked(LoaderError):
    """A read waited ``lock_timeout`` for a lock an application holds on the source
    table (e.g. an ``ALTER TABLE``) and gave up rather than queue. Transient: the
    load retries it with backoff."""

    pgcode = "55P03"  # lock_not_available: retried as a passing fault

    def __init__(self, table: str, lock_timeout: timedelta) -> None:
        self.table = table
        self.lock_timeout = lock_timeout
        super().__init__(
            f"{table}: another session holds a lock on the source table that the read "
            f"needs; the loader waited {_seconds(lock_timeout)} (source_lock_timeout) and "
            "let go instead of making the application queue behind it. Find the session "
            "in the source's pg_locks/pg_stat_activity, or load again when it has finished"
        )


class SourceStatementTimeout(LoaderError):
    """A source read ran longer than ``statement_timeout``."""

    def __init__(self, table: str, statement_timeout: timedelta) -> None:
        self.table = table
        self.statement_timeout = statement_timeout
        super().__init__(
            f"{table}: a read of the source ran longer than {_seconds(statement_timeout)} "
            "(source_statement_timeout) and was cancelled; nothing was written. Raise "
            "source_statement_timeout under the source's config.meta.tidewater, or index "
            "the cursor column"
        )


class TableLoadFailed(LoaderError):
    """One table failed; carries the table and the underlying error."""

    def __init__(
        self, table: str, error: BaseException, *, transient: bool, attempts: int = 1
    ) -> None:
        self.table = table
        self.error = error
        self.transient = transient
        self.attempts = attempts
        kind = "transient (retries exhausted)" if transient else "terminal"
        message = " ".join(str(error).split())
        super().__init__(f"{table}: {kind} error: {message}")


class LoadRunFailed(LoaderError):
    """At least one table failed; nothing downstream should run."""

    def __init__(self, failures: Sequence[TableLoadFailed]) -> None:
        self.failures = tuple(failures)
        # The run failed transiently when every table did (a retry later may pass).
        self.transient = all(failure.transient for failure in self.failures)
        names = ", ".join(failure.table for failure in self.failures)
        super().__init__(
            f"{len(self.failures)} table(s) failed to load ({names}); "
            f"first error: {self.failures[0]}"
        )


class SourceUnreachable(LoaderError):
    """A source could not be connected to. The message names the source, its DSN's
    environment variable and where it points (user, host, port, database), never the
    password."""

    def __init__(
        self, source: str, env: str, reason: str, where: str = "", *, code: int | None = None
    ) -> None:
        self.source = source
        self.code = code  # the driver's error number, where it has one
        self.env = env
        self.reason = reason
        self.where = where
        at = f" at {where}" if where else ""
        super().__init__(
            f"cannot connect to source {source}{at} ({env}): {reason}; check {env} "
            "(host, port, user, password, database) and that the server is up"
        )
