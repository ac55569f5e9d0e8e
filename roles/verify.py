"""Verify by trying: act as each role and attempt each operation, then compare the
allowed/denied matrix with what the spec implies.

Runs as a superuser in one transaction that is always rolled back. In every managed
schema a probe table and sequence are created by each role that may create there
(so default privileges are exercised too), then for each role, inside a savepoint
under ``SET ROLE``: SELECT, INSERT, UPDATE, DELETE, TRUNCATE, DROP, ALTER, CREATE and
nextval. Existing tables are tried with statements that touch no rows (``WHERE
false``), so a hand-made grant on a real table shows up without locking it. Role
attributes and memberships are checked in the catalog.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from roles.apply import own_transaction
from roles.diff import REQUIRED_ATTRIBUTES, SchemaAccess, desired_state
from roles.exceptions import VerifyError
from roles.inspect import Snapshot, inspect
from roles.spec import DATABASE_PRIVILEGES, Spec

Operation = Literal[
    "SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "DROP", "ALTER", "CREATE", "nextval"
]
OPERATIONS: tuple[Operation, ...] = get_args(Operation)
OBJECT_OPERATIONS: tuple[Operation, ...] = (
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "nextval",
)
WRITE_OPERATIONS = frozenset(OPERATIONS) - {"DROP", "ALTER"}
DATABASE = "(database)"
ROLE = "(role)"
DATABASE_OPERATIONS = {"connect": "CONNECT", "temp": "TEMP", "create": "CREATE SCHEMA"}
PROBE = "_tidewater_verify"

IS_SUPERUSER_QUERY = "select rolsuper from pg_roles where rolname = current_user"
FIRST_COLUMNS_QUERY = """
select n.nspname, c.relname, (
    select a.attname from pg_attribute as a
    where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
        and a.attgenerated = '' and a.attidentity <> 'a'
    order by a.attnum limit 1
)
from pg_class as c
join pg_namespace as n on n.oid = c.relnamespace
where c.relkind in ('r', 'p') and n.nspname = any(%s)
"""
CAN_CONNECT_QUERY = "select has_database_privilege(%s, current_database(), 'CONNECT')"
MEMBER_OF_QUERY = """
select b.rolname from pg_roles as b
where b.rolname <> %(role)s and pg_has_role(%(role)s, b.oid, 'MEMBER')
"""


@dataclass(frozen=True, order=True)
class Check:
    """One attempt: may ``role`` do ``operation`` in ``schema``, and should it?

    ``detail`` is empty for the probe made by the schema owner (the matrix); else it
    names the object tried (``raw_app.events``) or who created the probe.
    """

    role: str
    schema: str
    operation: str
    allowed: bool
    expected: bool
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.allowed == self.expected

    def describe(self) -> str:
        if self.schema == ROLE:
            verb = "is" if self.allowed else "is not"
            should = "must not be" if self.allowed else "should be"
            return f"{self.role} {verb} {self.operation}; the spec says it {should}"
        where = self.detail or ("the database" if self.schema == DATABASE else self.schema)
        verb = "may" if self.allowed else "may not"
        should = "may not" if self.allowed else "should"
        return f"{self.role} {verb} {self.operation} on {where}; the spec says it {should}"


@dataclass(frozen=True)
class VerifyResult:
    """Every attempt made, the matrix they form, and the differences from the spec."""

    checks: tuple[Check, ...]
    roles: tuple[str, ...]
    schemas: tuple[str, ...]

    @property
    def matrix(self) -> dict[tuple[str, str], dict[str, bool]]:
        """(role, schema) -> operation -> allowed, for the probe each schema owner made;
        schema ``(database)`` holds CONNECT, TEMP and CREATE SCHEMA."""
        cells: dict[tuple[str, str], dict[str, bool]] = {}
        for check in self.checks:
            if not check.detail and check.schema != ROLE:
                cells.setdefault((check.role, check.schema), {})[check.operation] = check.allowed
        return cells

    @property
    def violations(self) -> tuple[Check, ...]:
        return tuple(sorted(check for check in self.checks if not check.ok))

    def render_text(self) -> str:
        flagged = {
            (check.role, check.schema, check.operation)
            for check in self.checks
            if not check.ok and not check.detail
        }
        width = max([len(role) for role in self.roles] + [4]) + 2
        swidth = max([len(schema) for schema in self.schemas] + [len(DATABASE)]) + 2

        def cell(role: str, schema: str, operation: str, allowed: bool | None) -> str:
            if allowed is None:
                return ""
            mark = "!" if (role, schema, operation) in flagged else ""
            return ("yes" if allowed else "-") + mark

        matrix = self.matrix
        columns: list[str] = list(OPERATIONS)
        lines = [
            "-- verify: yes = allowed, - = denied, ! = differs from the spec",
            "role".ljust(width) + "schema".ljust(swidth) + "".join(c.ljust(9) for c in columns),
        ]
        for role in self.roles:
            for schema in self.schemas:
                row = matrix.get((role, schema))
                if row is None:
                    continue
                lines.append(
                    role.ljust(width)
                    + schema.ljust(swidth)
                    + "".join(cell(role, schema, c, row.get(c)).ljust(9) for c in columns)
                )
        lines.append("")
        database_columns = list(DATABASE_OPERATIONS.values())
        lines.append(
            "role".ljust(width)
            + "database".ljust(swidth)
            + "".join(c.ljust(15) for c in database_columns)
        )
        for role in self.roles:
            row = matrix.get((role, DATABASE))
            if row is not None:
                lines.append(
                    role.ljust(width)
                    + "".ljust(swidth)
                    + "".join(
                        cell(role, DATABASE, c, row.get(c)).ljust(15) for c in database_columns
                    )
                )
        violations = self.violations
        lines.append("")
        if violations:
            lines.append(f"-- {len(violations)} difference(s) from the spec:")
            lines.extend(f"--   {check.describe()}" for check in violations)
        else:
            lines.append(f"-- no differences from the spec ({len(self.checks)} checks)")
        return "\n".join(lines) + "\n"


def _levels(spec: Spec, access: SchemaAccess, role: str) -> tuple[bool, str | None]:
    """Whether ``role`` acts as the schema owner, and its best level there."""
    groups = set(spec.groups_of(role)) | {role}
    ownerlike = access.owner in groups
    levels = {access.level(group) for group in groups}
    level = "write" if ownerlike or "write" in levels else "read" if "read" in levels else None
    return ownerlike, level


def expected_schema_operations(spec: Spec, access: SchemaAccess, role: str) -> dict[str, bool]:
    """What ``role`` should be able to do to a table the schema owner created."""
    ownerlike, level = _levels(spec, access, role)
    if ownerlike:
        return dict.fromkeys(OPERATIONS, True)
    if level == "write":
        return {operation: operation in WRITE_OPERATIONS for operation in OPERATIONS}
    return {operation: operation == "SELECT" and level == "read" for operation in OPERATIONS}


def expected_object_operations(
    spec: Spec, access: SchemaAccess, role: str, owner: str
) -> dict[str, bool]:
    """What ``role`` should be able to do to an object ``owner`` created in the schema."""
    if owner == role or owner in spec.groups_of(role):
        return dict.fromkeys(OBJECT_OPERATIONS, True)
    _, level = _levels(spec, access, role)
    return {
        operation: level == "write" or (level == "read" and operation == "SELECT")
        for operation in OBJECT_OPERATIONS
    }


class _Session:
    """Attempts statements as a role, each in a savepoint that is rolled back."""

    def __init__(self, cur: psycopg2.extensions.cursor) -> None:
        self.cur = cur

    @contextmanager
    def as_role(self, role: str) -> Iterator[None]:
        self.cur.execute("SAVEPOINT tidewater_verify")
        try:
            self.cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            yield
        finally:
            self.cur.execute("ROLLBACK TO SAVEPOINT tidewater_verify")
            self.cur.execute("RELEASE SAVEPOINT tidewater_verify")

    def attempt(self, role: str, query: sql.Composable, params: Any = None) -> tuple[bool, str]:
        try:
            with self.as_role(role):
                self.cur.execute(query, params)
        except psycopg2.errors.InsufficientPrivilege:
            return False, ""
        except psycopg2.Error as exc:
            return False, " ".join(str(exc.pgerror or exc).split())
        return True, ""

    def keep(self, role: str, queries: list[sql.Composable]) -> str:
        """Run statements as ``role`` and keep their effect; returns an error or ''."""
        self.cur.execute("SAVEPOINT tidewater_keep")
        try:
            self.cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            for query in queries:
                self.cur.execute(query)
            self.cur.execute("RESET ROLE")
        except psycopg2.Error as exc:
            self.cur.execute("ROLLBACK TO SAVEPOINT tidewater_keep")
            return " ".join(str(exc.pgerror or exc).split())
        self.cur.execute("RELEASE SAVEPOINT tidewater_keep")
        return ""


def _probe_operations(
    schema: str, table: str, qualified_sequence: str
) -> dict[str, tuple[sql.Composable, Any]]:
    target = sql.Identifier(schema, table)
    return {
        "SELECT": (sql.SQL("SELECT * FROM {}").format(target), None),
        "INSERT": (sql.SQL("INSERT INTO {} (id, note) VALUES (-1, 'verify')").format(target), None),
        "UPDATE": (sql.SQL("UPDATE {} SET note = DEFAULT WHERE false").format(target), None),
        "DELETE": (sql.SQL("DELETE FROM {} WHERE false").format(target), None),
        "TRUNCATE": (sql.SQL("TRUNCATE {}").format(target), None),
        "DROP": (sql.SQL("DROP TABLE {}").format(target), None),
        "ALTER": (sql.SQL("ALTER TABLE {} ADD COLUMN verify_extra integer").format(target), None),
        "CREATE": (
            sql.SQL("CREATE TABLE {} (id integer)").format(sql.Identifier(schema, f"{PROBE}_new")),
            None,
        ),
        "nextval": (sql.SQL("SELECT nextval(%s::regclass)"), (qualified_sequence,)),
    }


def _create_probe(session: _Session, schema: str, creator: str, index: int) -> tuple[str, str, str]:
    table, sequence = f"{PROBE}_{index}", f"{PROBE}_{index}_seq"
    error = session.keep(
        creator,
        [
            sql.SQL("CREATE TABLE {} (id bigint, note text)").format(sql.Identifier(schema, table)),
            sql.SQL("CREATE SEQUENCE {}").format(sql.Identifier(schema, sequence)),
        ],
    )
    return table, sequence, error


def _existing_checks(
    session: _Session,
    spec: Spec,
    snapshot: Snapshot,
    accesses: Mapping[str, SchemaAccess],
    roles: list[str],
) -> list[Check]:
    cur = session.cur
    cur.execute(FIRST_COLUMNS_QUERY, (list(accesses),))
    first_column = {(schema, name): column for schema, name, column in cur.fetchall()}
    checks = []
    for relation in snapshot.relations:
        access = accesses.get(relation.schema)
        if access is None or relation.kind != "table":
            continue
        target = sql.Identifier(relation.schema, relation.name)
        attempts: dict[str, sql.Composable] = {
            "SELECT": sql.SQL("SELECT 1 FROM {} WHERE false").format(target)
        }
        column = first_column.get((relation.schema, relation.name))
        if column:
            name = sql.Identifier(column)
            attempts["INSERT"] = sql.SQL("INSERT INTO {} ({}) SELECT NULL WHERE false").format(
                target, name
            )
            attempts["UPDATE"] = sql.SQL("UPDATE {} SET {} = DEFAULT WHERE false").format(
                target, name
            )
        if relation.relkind in ("r", "p"):
            attempts["DELETE"] = sql.SQL("DELETE FROM {} WHERE false").format(target)
        where = f"{relation.schema}.{relation.name}"
        for role in roles:
            expected = expected_object_operations(spec, access, role, relation.owner)
            for operation, query in attempts.items():
                allowed, error = session.attempt(role, query)
                detail = f"{where} ({error})" if error else where
                checks.append(
                    Check(role, relation.schema, operation, allowed, expected[operation], detail)
                )
    return checks


def _catalog_checks(
    cur: psycopg2.extensions.cursor, spec: Spec, snapshot: Snapshot, roles: list[str]
) -> list[Check]:
    checks = []
    for role in roles:
        state = snapshot.roles[role]
        for field_name, wanted, keyword in REQUIRED_ATTRIBUTES:
            if field_name == "inherit":
                continue
            attribute = keyword[2:]  # NOSUPERUSER -> SUPERUSER
            checks.append(Check(role, ROLE, attribute, getattr(state, field_name), wanted))
        cur.execute(MEMBER_OF_QUERY, {"role": role})
        actual = {name for (name,) in cur.fetchall()}
        expected = set(spec.groups_of(role)) - {role}
        for group in sorted(actual | expected):
            checks.append(
                Check(role, ROLE, f"a member of {group}", group in actual, group in expected)
            )
    return checks


def _database_checks(session: _Session, spec: Spec, roles: list[str]) -> list[Check]:
    checks = []
    cur = session.cur
    for role in roles:
        wanted = {
            privilege for group in spec.groups_of(role) for privilege in spec.role(group).database
        }
        cur.execute(CAN_CONNECT_QUERY, (role,))
        checks.append(
            Check(role, DATABASE, "CONNECT", bool(cur.fetchone()[0]), "connect" in wanted)
        )
        attempts = {
            "temp": sql.SQL("CREATE TEMP TABLE {} (id integer)").format(sql.Identifier(PROBE)),
            "create": sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(f"{PROBE}_schema")),
        }
        for privilege, query in attempts.items():
            allowed, _ = session.attempt(role, query)
            checks.append(
                Check(role, DATABASE, DATABASE_OPERATIONS[privilege], allowed, privilege in wanted)
            )
    assert set(DATABASE_OPERATIONS) == set(DATABASE_PRIVILEGES)
    return checks


def _probe_checks(
    session: _Session,
    spec: Spec,
    snapshot: Snapshot,
    accesses: Mapping[str, SchemaAccess],
    roles: list[str],
) -> list[Check]:
    """Each creator of a schema makes a probe table and sequence there; every role tries
    every operation on the owner's probe (the matrix) and the object operations on the
    other creators' probes (their default privileges)."""
    checks = []
    cur = session.cur
    for schema, access in accesses.items():
        creators = [access.owner, *sorted(access.creators - {access.owner})]
        for index, creator in enumerate(creators):
            if creator not in snapshot.roles:
                continue
            table, sequence, error = _create_probe(session, schema, creator, index)
            if error:
                detail = f"(probe as {creator}: {error})"
                checks.append(Check(creator, schema, "CREATE", False, True, detail))
                continue
            qualified = sql.Identifier(schema, sequence).as_string(cur)
            operations = _probe_operations(schema, table, qualified)
            for role in roles:
                if creator == access.owner:
                    expected = expected_schema_operations(spec, access, role)
                    names = list(OPERATIONS)
                    detail = ""
                elif role == creator:
                    continue
                else:
                    expected = expected_object_operations(spec, access, role, creator)
                    names = list(OBJECT_OPERATIONS)
                    detail = f"a table {creator} created in {schema}"
                for operation in names:
                    query, params = operations[operation]
                    allowed, error = session.attempt(role, query, params)
                    note = f"{detail or schema} ({error})" if error else detail
                    checks.append(
                        Check(role, schema, operation, allowed, expected[operation], note)
                    )
    return checks


def verify(conn: psycopg2.extensions.connection, spec: Spec) -> VerifyResult:
    """Try every operation as every role of the spec; nothing is kept.

    Raises:
        VerifyError: not connected as a superuser (verification uses SET ROLE).
    """
    snapshot = inspect(conn)
    if not snapshot.is_superuser:
        raise VerifyError(
            f"verify needs a superuser connection to SET ROLE to each role; "
            f"{snapshot.current_user} is not one: use the admin target or --dsn"
        )
    desired = desired_state(spec, snapshot)
    checks: list[Check] = []
    roles = sorted(name for name in spec.managed_names if name in snapshot.roles)
    checks += [
        Check(name, ROLE, "present", False, True)
        for name in sorted(spec.managed_names - set(roles))
    ]
    accesses = {
        name: access for name, access in desired.schemas.items() if name in snapshot.schemas
    }
    checks += [
        Check("-", name, "present", False, True)
        for name in desired.schemas
        if name not in snapshot.schemas
    ]
    with own_transaction(conn), conn.cursor() as cur:
        cur.execute("SET LOCAL lock_timeout = '5s'")
        cur.execute("SET LOCAL statement_timeout = '60s'")
        session = _Session(cur)
        checks += _probe_checks(session, spec, snapshot, accesses, roles)
        checks += _existing_checks(session, spec, snapshot, accesses, roles)
        checks += _database_checks(session, spec, roles)
        checks += _catalog_checks(cur, spec, snapshot, roles)
    return VerifyResult(tuple(sorted(checks)), tuple(roles), tuple(accesses))
