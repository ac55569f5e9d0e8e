"""Execute a plan: every statement in one transaction, committed only when asked.

A dry run executes the same statements and rolls back, so the database itself
checks the plan (names, syntax, permissions) without changing anything.

Why a dry run (or an apply) runs nobody else's code, although it runs as a
superuser inside the database users write to: a plan holds only CREATE/ALTER ROLE,
GRANT/REVOKE (on roles and objects), ALTER DEFAULT PRIVILEGES, CREATE SCHEMA …
AUTHORIZATION and ALTER … OWNER TO. None of these reads or writes a table row, so
no trigger fires and no rule, policy, default or view is evaluated; none calls a
function (argument lists come from the catalog as type names). Event triggers
fire on GRANT, REVOKE and ALTER DEFAULT PRIVILEGES, but only a superuser can create
an event trigger, so their code is the administrators' own. Names are resolved in
pg_catalog only (``search_path``), so nothing a user creates can stand in for a
catalog object. Statements that carry a password verifier are sent with
statement logging off for that statement, so the verifier never reaches the log.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions

from roles.exceptions import ApplyError
from roles.inspect import guard_session
from roles.passwords import Secret
from roles.plan import Plan, Statement

# Settings under which a statement's text reaches the server log; all superuser-only.
LOGGING_SETTINGS = {
    "log_statement": "none",
    "log_min_duration_statement": "-1",
    "log_min_error_statement": "panic",
}
READ_LOGGING_QUERY = (
    "select current_setting('is_superuser') = 'on', "
    "current_setting('log_statement'), current_setting('log_min_duration_statement'), "
    "current_setting('log_min_error_statement')"
)
SET_LOCAL_QUERY = "select pg_catalog.set_config(%s, %s, true)"


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
        guard_session(cur)
        cur.execute(READ_LOGGING_QUERY)
        superuser, *current = cur.fetchone()
        logged = dict(zip(LOGGING_SETTINGS, current, strict=True))
        for statement in plan.statements:
            secret = _carries_secret(statement)
            try:
                if secret and superuser:
                    for name, quiet in LOGGING_SETTINGS.items():
                        cur.execute(SET_LOCAL_QUERY, (name, quiet))
                cur.execute(statement.query, statement.params or None)
                if secret and superuser:
                    for name, value in logged.items():
                        cur.execute(SET_LOCAL_QUERY, (name, value))
            except psycopg2.Error as exc:
                reason = " ".join(str(exc.pgerror or exc).split()) or type(exc).__name__
                raise ApplyError(statement.text, reason, applying=apply) from None
        if apply:
            conn.commit()


def _carries_secret(statement: Statement) -> bool:
    return any(isinstance(param, Secret) for param in statement.params)
