"""Execute a plan: every statement in one transaction, committed only when asked.

A dry run executes the same statements and rolls back, so the database itself
checks the plan (names, syntax, permissions) without changing anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions

from roles.exceptions import ApplyError
from roles.passwords import Secret
from roles.plan import Plan


def _adapt_secret(secret: Secret) -> psycopg2.extensions.QuotedString:
    return psycopg2.extensions.QuotedString(secret.reveal())


psycopg2.extensions.register_adapter(Secret, _adapt_secret)


@contextmanager
def own_transaction(conn: psycopg2.extensions.connection) -> Iterator[None]:
    """Run the block in a transaction of its own (autocommit off for the duration).

    Raises:
        ValueError: the connection is in the middle of someone else's transaction.
    """
    status = conn.info.transaction_status
    if status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        raise ValueError("the connection has an open transaction; commit or roll back first")
    autocommit = conn.autocommit
    conn.autocommit = False
    try:
        yield
    finally:
        if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            conn.rollback()
        conn.autocommit = autocommit


def apply_plan(conn: psycopg2.extensions.connection, plan: Plan, *, apply: bool) -> None:
    """Run ``plan`` in one transaction; commit if ``apply``, else roll back.

    Raises:
        ApplyError: a statement failed (named without passwords); nothing was applied.
    """
    with own_transaction(conn), conn.cursor() as cur:
        for statement in plan.statements:
            try:
                cur.execute(statement.query, statement.params or None)
            except psycopg2.Error as exc:
                reason = " ".join(str(exc.pgerror or exc).split()) or type(exc).__name__
                raise ApplyError(statement.text, reason, applying=apply) from None
        if apply:
            conn.commit()
