"""Verify the access every role has, as an allowed/denied matrix, against the spec.

Runs as a superuser in one transaction that is always rolled back, and never runs
code a user wrote. In every managed schema each role that may create there makes a
probe table, sequence and function (``SET ROLE`` to that creator for the three
``CREATE`` statements and back: creating an empty table runs no user code, and the
creator's default privileges are exercised). Then, for each role, PostgreSQL's own
privilege functions (``has_table_privilege``, ``has_schema_privilege``,
``has_sequence_privilege``, ``has_function_privilege``, ``has_database_privilege``,
``pg_has_role`` for ownership) answer whether it could SELECT, INSERT, UPDATE,
DELETE, TRUNCATE, DROP, ALTER, CREATE, nextval and EXECUTE. They are what the
executor itself checks (inheritance, ``pg_read_all_data`` and the like included),
but no statement is tried on a table, so no trigger, rule, policy or view a user
planted can fire with the verifier's rights. Existing tables, sequences and
functions are checked the same way; ``SECURITY DEFINER`` functions, schema
``public``, role settings and roles the spec does not know are reported too.
Names resolve in pg_catalog only (``search_path``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from roles.apply import own_transaction
from roles.diff import (
    REQUIRED_ATTRIBUTES,
    SchemaAccess,
    UnknownRole,
    desired_state,
    security_definer_notes,
    unknown_roles,
)
from roles.exceptions import VerifyError
from roles.inspect import Snapshot, guard_session, inspect
from roles.spec import DATABASE_PRIVILEGES, Spec

Operation = Literal[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "DROP",
    "ALTER",
    "CREATE",
    "nextval",
    "EXECUTE",
]
OPERATIONS: tuple[Operation, ...] = get_args(Operation)
OBJECT_OPERATIONS: tuple[Operation, ...] = (
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "nextval",
    "EXECUTE",
)
WRITE_OPERATIONS = frozenset(OPERATIONS) - {"DROP", "ALTER"}
DATABASE = "(database)"
ROLE = "(role)"
SETTING = "(setting)"
DATABASE_OPERATIONS = {"connect": "CONNECT", "temp": "TEMP", "create": "CREATE SCHEMA"}
PROBE = "_tidewater_verify"

# What a role could do to one table, sequence and function of a schema, from the
# privilege functions alone; %(role)s is a role name, the others oids.
PROBE_PRIVILEGES_QUERY = """
select
    has_schema_privilege(%(role)s, %(schema)s, 'USAGE'),
    has_table_privilege(%(role)s, %(table)s, 'SELECT'),
    has_table_privilege(%(role)s, %(table)s, 'INSERT'),
    has_table_privilege(%(role)s, %(table)s, 'UPDATE'),
    has_table_privilege(%(role)s, %(table)s, 'DELETE'),
    has_table_privilege(%(role)s, %(table)s, 'TRUNCATE'),
    pg_has_role(%(role)s, t.relowner, 'USAGE') or pg_has_role(%(role)s, n.nspowner, 'USAGE'),
    pg_has_role(%(role)s, t.relowner, 'USAGE'),
    has_schema_privilege(%(role)s, %(schema)s, 'CREATE'),
    has_sequence_privilege(%(role)s, %(sequence)s, 'USAGE')
        or has_sequence_privilege(%(role)s, %(sequence)s, 'UPDATE'),
    has_function_privilege(%(role)s, %(function)s, 'EXECUTE')
from pg_class as t
join pg_namespace as n on n.oid = t.relnamespace
where t.oid = %(table)s
"""
PROBE_OIDS_QUERY = """
select n.oid, t.oid, s.oid, f.oid
from pg_namespace as n
join pg_class as t on t.relnamespace = n.oid and t.relname = %(table)s
join pg_class as s on s.relnamespace = n.oid and s.relname = %(sequence)s
join pg_proc as f on f.pronamespace = n.oid and f.proname = %(function)s
where n.nspname = %(schema)s
"""
# Existing tables and views (columns: any column will do, as for a statement naming one).
RELATION_PRIVILEGES_QUERY = """
select n.nspname, c.relname, c.relkind::text,
    has_schema_privilege(%(role)s, n.oid, 'USAGE'),
    has_any_column_privilege(%(role)s, c.oid, 'SELECT'),
    has_any_column_privilege(%(role)s, c.oid, 'INSERT'),
    has_any_column_privilege(%(role)s, c.oid, 'UPDATE'),
    has_table_privilege(%(role)s, c.oid, 'DELETE'),
    has_table_privilege(%(role)s, c.oid, 'TRUNCATE')
from pg_class as c
join pg_namespace as n on n.oid = c.relnamespace
where n.nspname = any(%(schemas)s) and c.relkind in ('r', 'p', 'v', 'm', 'f')
"""
SEQUENCE_PRIVILEGES_QUERY = """
select n.nspname, c.relname,
    has_schema_privilege(%(role)s, n.oid, 'USAGE'),
    has_sequence_privilege(%(role)s, c.oid, 'SELECT'),
    has_sequence_privilege(%(role)s, c.oid, 'USAGE')
        or has_sequence_privilege(%(role)s, c.oid, 'UPDATE')
from pg_class as c
join pg_namespace as n on n.oid = c.relnamespace
where n.nspname = any(%(schemas)s) and c.relkind = 'S'
"""
FUNCTION_PRIVILEGES_QUERY = """
select n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
    has_schema_privilege(%(role)s, n.oid, 'USAGE'),
    has_function_privilege(%(role)s, p.oid, 'EXECUTE')
from pg_proc as p
join pg_namespace as n on n.oid = p.pronamespace
where n.nspname = any(%(schemas)s)
"""
DATABASE_PRIVILEGES_QUERY = """
select has_database_privilege(%(role)s, current_database(), 'CONNECT'),
    has_database_privilege(%(role)s, current_database(), 'TEMP'),
    has_database_privilege(%(role)s, current_database(), 'CREATE')
"""
PUBLIC_SCHEMA_QUERY = """
select has_schema_privilege(%(role)s, n.oid, 'CREATE')
from pg_namespace as n where n.nspname = 'public'
"""
MEMBER_OF_QUERY = """
select b.rolname from pg_roles as b
where b.rolname <> %(role)s and pg_has_role(%(role)s, b.oid, 'MEMBER')
"""


@dataclass(frozen=True, order=True)
class Check:
    """One check: may ``role`` do ``operation`` in ``schema``, and should it?

    ``detail`` is empty for the probe made by the schema owner (the matrix); else it
    names the object checked (``raw_app.events``) or who created the probe. For a
    setting (schema ``(setting)``) ``detail`` is ``actual -> wanted``.
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
        if self.schema == SETTING:
            actual, _, wanted = self.detail.partition(" -> ")
            return f"{self.role} has {self.operation} {actual}; the spec says {wanted}"
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
    """Every check made, the matrix they form, and the differences from the spec."""

    checks: tuple[Check, ...]
    roles: tuple[str, ...]
    schemas: tuple[str, ...]
    notes: tuple[str, ...] = ()
    unknown_roles: tuple[UnknownRole, ...] = ()
    strict: bool = False  # roles the spec does not know count as differences

    @property
    def matrix(self) -> dict[tuple[str, str], dict[str, bool]]:
        """(role, schema) -> operation -> allowed, for the probe each schema owner made;
        schema ``(database)`` holds CONNECT, TEMP and CREATE SCHEMA."""
        cells: dict[tuple[str, str], dict[str, bool]] = {}
        for check in self.checks:
            if not check.detail and check.schema not in (ROLE, SETTING):
                cells.setdefault((check.role, check.schema), {})[check.operation] = check.allowed
        return cells

    @property
    def violations(self) -> tuple[Check, ...]:
        found = [check for check in self.checks if not check.ok]
        if self.strict:
            found += [
                Check(role.name, ROLE, "known to the spec", False, True)
                for role in self.unknown_roles
            ]
        return tuple(sorted(found))

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
        if self.notes or self.unknown_roles:
            lines.append("")
            lines.extend(f"-- note: {note}" for note in self.notes)
            for unknown in self.unknown_roles:
                level = "WARNING" if "SUPERUSER" in unknown.attributes else "unknown"
                lines.append(f"-- {level}: {unknown.describe()}")
        violations = self.violations
        lines.append("")
        if violations:
            lines.append(f"-- {len(violations)} difference(s) from the spec:")
            lines.extend(f"--   {check.describe()}" for check in violations)
        else:
            lines.append(f"-- no differences from the spec ({len(self.checks)} checks)")
        return "\n".join(lines) + "\n"


def _levels(spec: Spec, access: SchemaAccess, role: str) -> tuple[bool, str | None, bool]:
    """Whether ``role`` acts as the schema owner, its best level there, and whether the
    spec lets it execute the schema's functions."""
    groups = set(spec.groups_of(role)) | {role}
    ownerlike = access.owner in groups
    levels = {access.level(group) for group in groups}
    level = "write" if ownerlike or "write" in levels else "read" if "read" in levels else None
    executes = level == "write" or bool(groups & access.executors)
    return ownerlike, level, executes


def expected_schema_operations(spec: Spec, access: SchemaAccess, role: str) -> dict[str, bool]:
    """What ``role`` should be able to do to a table the schema owner created."""
    ownerlike, level, executes = _levels(spec, access, role)
    if ownerlike:
        return dict.fromkeys(OPERATIONS, True)
    if level == "write":
        return {operation: operation in WRITE_OPERATIONS for operation in OPERATIONS}
    expected = {operation: operation == "SELECT" and level == "read" for operation in OPERATIONS}
    expected["EXECUTE"] = executes
    return expected


def expected_object_operations(
    spec: Spec, access: SchemaAccess, role: str, owner: str
) -> dict[str, bool]:
    """What ``role`` should be able to do to an object ``owner`` created in the schema."""
    if owner == role or owner in spec.groups_of(role):
        return dict.fromkeys(OBJECT_OPERATIONS, True)
    _, level, executes = _levels(spec, access, role)
    expected = {
        operation: level == "write" or (level == "read" and operation == "SELECT")
        for operation in OBJECT_OPERATIONS
    }
    expected["EXECUTE"] = executes
    return expected


def _create_probe(
    cur: psycopg2.extensions.cursor, schema: str, creator: str, index: int
) -> tuple[dict[str, int], str]:
    """As ``creator``, create a probe table, sequence and function in ``schema``.

    The only statements run under ``SET ROLE`` are these three CREATEs of new, empty
    objects: no trigger, rule or function of anyone else's can fire on them.
    Returns the oids (keys schema, table, sequence, function) or an error.
    """
    names = {
        "schema": schema,
        "table": f"{PROBE}_{index}",
        "sequence": f"{PROBE}_{index}_seq",
        "function": f"{PROBE}_{index}_fn",
    }
    statements = [
        sql.SQL("CREATE TABLE {} (id bigint, note text)").format(
            sql.Identifier(schema, names["table"])
        ),
        sql.SQL("CREATE SEQUENCE {}").format(sql.Identifier(schema, names["sequence"])),
        sql.SQL("CREATE FUNCTION {}() RETURNS integer LANGUAGE sql AS 'SELECT 1'").format(
            sql.Identifier(schema, names["function"])
        ),
    ]
    cur.execute("SAVEPOINT tidewater_probe")
    try:
        cur.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(creator)))
        for statement in statements:
            cur.execute(statement)
        cur.execute("RESET ROLE")
    except psycopg2.Error as exc:
        cur.execute("ROLLBACK TO SAVEPOINT tidewater_probe")
        return {}, " ".join(str(exc.pgerror or exc).split())
    cur.execute("RELEASE SAVEPOINT tidewater_probe")
    cur.execute(PROBE_OIDS_QUERY, names)
    schema_oid, table, sequence, function = cur.fetchone()
    return {"schema": schema_oid, "table": table, "sequence": sequence, "function": function}, ""


def _probe_privileges(
    cur: psycopg2.extensions.cursor, role: str, oids: Mapping[str, int]
) -> dict[str, bool]:
    cur.execute(PROBE_PRIVILEGES_QUERY, {"role": role, **oids})
    usage, *answers = cur.fetchone()
    found = dict(zip(OPERATIONS, answers, strict=True))
    # Naming an object in a schema needs USAGE on it; creating there needs only CREATE.
    return {op: bool(allowed and (usage or op == "CREATE")) for op, allowed in found.items()}


def _probe_checks(
    cur: psycopg2.extensions.cursor,
    spec: Spec,
    snapshot: Snapshot,
    accesses: Mapping[str, SchemaAccess],
    roles: list[str],
) -> list[Check]:
    """Each creator of a schema makes a probe table, sequence and function there; every
    role is checked for every operation on the owner's probe (the matrix) and for the
    object operations on the other creators' probes (their default privileges)."""
    checks = []
    for schema, access in accesses.items():
        creators = [access.owner, *sorted(access.creators - {access.owner})]
        for index, creator in enumerate(creators):
            if creator not in snapshot.roles:
                continue
            oids, error = _create_probe(cur, schema, creator, index)
            if error:
                detail = f"(probe as {creator}: {error})"
                checks.append(Check(creator, schema, "CREATE", False, True, detail))
                continue
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
                allowed = _probe_privileges(cur, role, oids)
                for operation in names:
                    note = detail
                    if operation == "EXECUTE" and detail:
                        note = f"a function {creator} created in {schema}"
                    elif operation == "nextval" and detail:
                        note = f"a sequence {creator} created in {schema}"
                    checks.append(
                        Check(
                            role, schema, operation, allowed[operation], expected[operation], note
                        )
                    )
    return checks


def _existing_checks(
    cur: psycopg2.extensions.cursor,
    spec: Spec,
    snapshot: Snapshot,
    accesses: Mapping[str, SchemaAccess],
    roles: list[str],
) -> list[Check]:
    """Every existing table, view, sequence and function of the managed schemas."""
    owners = {(r.schema, r.name): r.owner for r in snapshot.relations}
    function_owners = {(f.schema, f.name, f.args): f.owner for f in snapshot.functions}
    schemas = list(accesses)
    checks = []
    for role in roles:
        params = {"role": role, "schemas": schemas}
        cur.execute(RELATION_PRIVILEGES_QUERY, params)
        for schema, name, relkind, usage, *answers in cur.fetchall():
            if (schema, name) not in owners:
                continue  # an extension's, or made after the snapshot
            expected = expected_object_operations(
                spec, accesses[schema], role, owners[schema, name]
            )
            operations = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
            if relkind not in ("r", "p"):
                operations = ("SELECT",)
            found = dict(
                zip(("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"), answers, strict=True)
            )
            for operation in operations:
                allowed = bool(usage and found[operation])
                checks.append(
                    Check(role, schema, operation, allowed, expected[operation], f"{schema}.{name}")
                )
        cur.execute(SEQUENCE_PRIVILEGES_QUERY, params)
        for schema, name, usage, select, nextval in cur.fetchall():
            if (schema, name) not in owners:
                continue
            expected = expected_object_operations(
                spec, accesses[schema], role, owners[schema, name]
            )
            where = f"{schema}.{name}"
            checks.append(
                Check(role, schema, "SELECT", bool(usage and select), expected["SELECT"], where)
            )
            checks.append(
                Check(role, schema, "nextval", bool(usage and nextval), expected["nextval"], where)
            )
        cur.execute(FUNCTION_PRIVILEGES_QUERY, params)
        for schema, name, args, usage, execute in cur.fetchall():
            owner = function_owners.get((schema, name, args))
            if owner is None:
                continue
            expected = expected_object_operations(spec, accesses[schema], role, owner)
            checks.append(
                Check(
                    role,
                    schema,
                    "EXECUTE",
                    bool(usage and execute),
                    expected["EXECUTE"],
                    f"{schema}.{name}({args})",
                )
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


def _setting_checks(spec: Spec, snapshot: Snapshot, roles: list[str]) -> list[Check]:
    """The ALTER ROLE … SET settings and connection limit of every managed role."""
    checks = []
    for role in roles:
        wanted = spec.login_settings(role)
        actual = dict(snapshot.settings.get(role, {}))
        for parameter, value in snapshot.database_settings.get(role, {}).items():
            actual[f"{parameter} (in database {snapshot.database})"] = value
        for parameter in sorted(set(wanted) | set(actual)):
            have, want = actual.get(parameter), wanted.get(parameter)
            shown = f"{have if have is not None else 'unset'} -> {want if want is not None else 'unset'}"
            checks.append(Check(role, SETTING, parameter, have == want, True, shown))
        have_limit = snapshot.roles[role].connection_limit
        want_limit = spec.connection_limit(role)
        checks.append(
            Check(
                role,
                SETTING,
                "connection limit",
                have_limit == want_limit,
                True,
                f"{have_limit} -> {want_limit}",
            )
        )
    return checks


def _database_checks(cur: psycopg2.extensions.cursor, spec: Spec, roles: list[str]) -> list[Check]:
    checks = []
    for role in roles:
        wanted = {
            privilege for group in spec.groups_of(role) for privilege in spec.role(group).database
        }
        cur.execute(DATABASE_PRIVILEGES_QUERY, {"role": role})
        found = dict(zip(("connect", "temp", "create"), cur.fetchone(), strict=True))
        for privilege, allowed in found.items():
            checks.append(
                Check(
                    role,
                    DATABASE,
                    DATABASE_OPERATIONS[privilege],
                    bool(allowed),
                    privilege in wanted,
                )
            )
    assert set(DATABASE_OPERATIONS) == set(DATABASE_PRIVILEGES)
    return checks


def _public_schema_checks(
    cur: psycopg2.extensions.cursor, snapshot: Snapshot, roles: list[str]
) -> list[Check]:
    """Schema ``public``: no managed role may create there or hold direct grants on it."""
    if "public" not in snapshot.schemas:
        return []
    checks = []
    for role in roles:
        cur.execute(PUBLIC_SCHEMA_QUERY, {"role": role})
        checks.append(
            Check(role, "public", "CREATE", bool(cur.fetchone()[0]), False, "schema public")
        )
    for grant in sorted(snapshot.grants):
        if grant.kind == "schema" and grant.schema == "public" and grant.grantee in roles:
            checks.append(
                Check(
                    grant.grantee,
                    ROLE,
                    f"granted {grant.privilege} on schema public directly",
                    True,
                    False,
                )
            )
    return checks


def verify(
    conn: psycopg2.extensions.connection, spec: Spec, *, strict: bool = False
) -> VerifyResult:
    """Check every operation for every role of the spec; nothing is kept.

    Args:
        conn: a superuser connection.
        spec: from `load_spec`.
        strict: count roles the spec does not know as differences.

    Raises:
        VerifyError: not connected as a superuser (the probes are created as each
            creator with SET ROLE).
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
        guard_session(cur)
        cur.execute("SET LOCAL lock_timeout = '5s'")
        cur.execute("SET LOCAL statement_timeout = '60s'")
        checks += _existing_checks(cur, spec, snapshot, accesses, roles)
        checks += _probe_checks(cur, spec, snapshot, accesses, roles)
        checks += _database_checks(cur, spec, roles)
        checks += _catalog_checks(cur, spec, snapshot, roles)
        checks += _public_schema_checks(cur, snapshot, roles)
    checks += _setting_checks(spec, snapshot, roles)
    return VerifyResult(
        tuple(sorted(checks)),
        tuple(roles),
        tuple(accesses),
        notes=tuple(security_definer_notes(desired, snapshot)),
        unknown_roles=tuple(unknown_roles(spec, snapshot)),
        strict=strict,
    )
