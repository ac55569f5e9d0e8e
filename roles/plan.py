"""Render changes as SQL: PostgreSQL from a diff, Redshift from the spec.

Pure functions. Every statement is a ``psycopg2.sql`` composition (names through
``sql.Identifier``, passwords as bound parameters holding a verifier) and carries
the role it concerns, so a plan can be shown grouped by who gains or loses what.
Passwords print as ``'***'``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from psycopg2 import sql

from roles.diff import (
    SCHEMA_PRIVILEGES,
    Changes,
    OwnerChange,
    SettingChange,
    UnknownRole,
    managed_schemas,
)
from roles.inspect import PUBLIC, DefaultGrant, Grant, Membership
from roles.passwords import REDACTED, DesiredPassword, Secret, md5_verifier, scram_verifier
from roles.spec import NAME_RE, Spec

Effect = Literal["creates", "changes", "gains", "loses"]
Dialect = Literal["postgres", "redshift"]
EFFECT_ORDER: tuple[Effect, ...] = ("creates", "changes", "gains", "loses")

# Privilege keywords as aclexplode spells them; anything else is refused, not rendered.
KNOWN_PRIVILEGES = frozenset(
    {
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "TRUNCATE",
        "REFERENCES",
        "TRIGGER",
        "MAINTAIN",
        "USAGE",
        "CREATE",
        "CONNECT",
        "TEMPORARY",
        "EXECUTE",
        "SET",
        "ALTER SYSTEM",
    }
)
DEFAULT_OBJECT_KEYWORDS = {"tables": "TABLES", "sequences": "SEQUENCES", "functions": "FUNCTIONS"}
OWNER_KEYWORDS = {
    "r": "TABLE",
    "p": "TABLE",
    "v": "VIEW",
    "m": "MATERIALIZED VIEW",
    "f": "FOREIGN TABLE",
    "S": "SEQUENCE",
}
# Keywords that cannot be bare identifiers; used only to print names readably.
RESERVED_WORDS = frozenset(
    [
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "asymmetric",
        "authorization",
        "binary",
        "both",
        "case",
        "cast",
        "check",
        "collate",
        "collation",
        "column",
        "concurrently",
        "constraint",
        "create",
        "cross",
        "current_catalog",
        "current_date",
        "current_role",
        "current_schema",
        "current_time",
        "current_timestamp",
        "current_user",
        "default",
        "deferrable",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "fetch",
        "for",
        "foreign",
        "freeze",
        "from",
        "full",
        "grant",
        "group",
        "having",
        "ilike",
        "in",
        "initially",
        "inner",
        "intersect",
        "into",
        "is",
        "isnull",
        "join",
        "lateral",
        "leading",
        "left",
        "like",
        "limit",
        "localtime",
        "localtimestamp",
        "natural",
        "not",
        "notnull",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "outer",
        "overlaps",
        "placing",
        "primary",
        "references",
        "returning",
        "right",
        "select",
        "session_user",
        "similar",
        "some",
        "symmetric",
        "system_user",
        "table",
        "tablesample",
        "then",
        "to",
        "trailing",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "variadic",
        "verbose",
        "when",
        "where",
        "window",
        "with",
    ]
)
REDSHIFT_TABLE_PRIVILEGES = {
    "read": ("SELECT",),
    "write": ("SELECT", "INSERT", "UPDATE", "DELETE"),
}
REDSHIFT_DATABASE_PRIVILEGES = {"temp": "TEMPORARY", "create": "CREATE"}
# ALTER USER … SET parameters Redshift accepts (of the spec's closed set).
REDSHIFT_USER_SETTINGS = frozenset({"statement_timeout"})


def quote_ident(name: str) -> str:
    """A name as PostgreSQL would need it written (quoted only when it must be)."""
    if NAME_RE.match(name) and name not in RESERVED_WORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def as_text(query: sql.Composable) -> str:
    """Readable SQL for a composition, without a connection; bound values show as ***."""
    if isinstance(query, sql.Composed):
        return "".join(as_text(part) for part in query.seq)
    if isinstance(query, sql.SQL):
        return query.string
    if isinstance(query, sql.Identifier):
        return ".".join(quote_ident(part) for part in query.strings)
    if isinstance(query, sql.Placeholder):
        return REDACTED
    if isinstance(query, sql.Literal):
        value = query.wrapped
        if isinstance(value, Secret):
            return REDACTED
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return "'" + str(value).replace("'", "''") + "'"
    raise TypeError(f"cannot render {type(query).__name__}")


@dataclass(frozen=True)
class Statement:
    """One SQL statement and the role it gives to or takes from."""

    subject: str
    effect: Effect
    query: sql.Composable
    params: tuple[Any, ...] = ()

    @property
    def text(self) -> str:
        return as_text(self.query)

    def __repr__(self) -> str:
        return f"Statement({self.subject!r}, {self.effect!r}, {self.text!r})"


@dataclass(frozen=True)
class Plan:
    """The statements to run, in order, and notes on what was left alone."""

    statements: tuple[Statement, ...]
    notes: tuple[str, ...] = ()
    database: str = ""
    dialect: Dialect = "postgres"
    unknown_roles: tuple[UnknownRole, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.statements

    def render_text(self) -> str:
        """The plan as SQL, grouped by who creates, changes, gains or loses what."""
        lines = []
        if self.is_empty:
            lines.append(f"-- Nothing to do: database {self.database} matches the spec.")
        else:
            count = len(self.statements)
            lines.append(
                f"-- Plan for database {self.database} ({self.dialect}): {count} statement"
                f"{'' if count == 1 else 's'}, run in one transaction."
            )
        groups: dict[tuple[str, Effect], list[Statement]] = defaultdict(list)
        for statement in self.statements:
            groups[(statement.subject, statement.effect)].append(statement)
        subjects = sorted({subject for subject, _ in groups}, key=lambda s: (s == PUBLIC, s))
        for subject in subjects:
            for effect in EFFECT_ORDER:
                statements = groups.get((subject, effect))
                if not statements:
                    continue
                verb = {"creates": "is created", "changes": "changes"}.get(effect, effect)
                lines.append("")
                lines.append(f"-- {subject} {verb}")
                lines.extend(f"{statement.text};" for statement in statements)
        if self.notes:
            lines.append("")
            lines.extend(f"-- note: {note}" for note in self.notes)
        if self.unknown_roles:
            lines.append("")
            for role in self.unknown_roles:
                level = "WARNING" if "SUPERUSER" in role.attributes else "unknown"
                lines.append(f"-- {level}: {role.describe()}")
        return "\n".join(lines) + "\n"


def _privileges(names: Iterable[str]) -> sql.Composable:
    ordered = sorted(set(names))
    unknown = [name for name in ordered if name not in KNOWN_PRIVILEGES]
    if unknown:
        raise ValueError(f"unknown privilege {unknown[0]!r}")
    return sql.SQL(", ").join(sql.SQL(name) for name in ordered)


def _grantee(name: str, *, redshift: bool = False) -> sql.Composable:
    if name == PUBLIC:
        return sql.SQL("PUBLIC")
    if redshift:
        return sql.SQL("GROUP {}").format(sql.Identifier(name))
    return sql.Identifier(name)


def _routine(schema: str, name: str, args: str) -> sql.Composable:
    # The argument list comes from pg_get_function_identity_arguments, i.e. the catalog.
    return sql.SQL("{}({})").format(sql.Identifier(schema, name), sql.SQL(args))


KIND_ORDER = {"database": 0, "schema": 1, "table": 2, "sequence": 3, "function": 4, "column": 5}
OBJECT_KEYWORDS = {
    "database": "DATABASE",
    "schema": "SCHEMA",
    "table": "TABLE",
    "column": "TABLE",
    "sequence": "SEQUENCE",
    "function": "ROUTINE",
}


def _object_name(kind: str, schema: str, name: str, detail: str) -> sql.Composable:
    if kind == "database":
        return sql.Identifier(name)
    if kind == "schema":
        return sql.Identifier(schema)
    if kind == "function":
        return _routine(schema, name, detail)
    return sql.Identifier(schema, name)


def _objects(kind: str, objects: Sequence[tuple[str, str, str]]) -> sql.Composable:
    """``TABLE a.b, a.c``: objects of one kind, as (schema, name, detail)."""
    if kind not in OBJECT_KEYWORDS:
        raise ValueError(f"unknown object kind {kind!r}")
    names = sql.SQL(", ").join(_object_name(kind, *obj) for obj in objects)
    return sql.SQL("{} {}").format(sql.SQL(OBJECT_KEYWORDS[kind]), names)


def _grant_statements(grants: Iterable[Grant], *, revoke: bool) -> list[Statement]:
    """One statement per grantee, kind and privilege set, listing every object it covers
    (a column privilege gets a statement per table)."""
    per_object: dict[tuple, set[str]] = defaultdict(set)
    for grant in grants:
        key = (grant.kind, grant.grantee, grant.grant_option, grant.schema, grant.name)
        per_object[(*key, grant.detail if grant.kind == "column" else "", grant.detail)].add(
            grant.privilege
        )
    combined: dict[tuple, list[tuple[str, str, str]]] = defaultdict(list)
    columns: dict[tuple, set[tuple[str, str]]] = defaultdict(set)
    for (kind, grantee, option, schema, name, column, detail), privileges in per_object.items():
        if kind == "column":
            columns[(kind, grantee, option, schema, name)].update((p, column) for p in privileges)
        else:
            key = (kind, grantee, option, tuple(sorted(privileges)))
            combined[key].append((schema, name, detail))
    statements = []
    for (kind, grantee, option, privileges), objects in sorted(
        combined.items(), key=lambda item: (KIND_ORDER[item[0][0]], item[0])
    ):
        statements.append(
            _grant_statement(
                kind, sorted(objects), grantee, option, _privileges(privileges), revoke=revoke
            )
        )
    for (kind, grantee, option, schema, name), pairs in sorted(columns.items()):
        listed = sql.SQL(", ").join(
            sql.SQL("{} ({})").format(_privileges([privilege]), sql.Identifier(column))
            for privilege, column in sorted(pairs)
        )
        statements.append(
            _grant_statement(kind, [(schema, name, "")], grantee, option, listed, revoke=revoke)
        )
    return statements


def _grant_statement(
    kind: str,
    objects: Sequence[tuple[str, str, str]],
    grantee: str,
    grant_option: bool,
    listed: sql.Composable,
    *,
    revoke: bool,
) -> Statement:
    target = _objects(kind, objects)
    if revoke:
        option = sql.SQL("GRANT OPTION FOR ") if grant_option else sql.SQL("")
        query = sql.SQL("REVOKE {}{} ON {} FROM {}").format(
            option, listed, target, _grantee(grantee)
        )
    else:
        option = sql.SQL(" WITH GRANT OPTION") if grant_option else sql.SQL("")
        query = sql.SQL("GRANT {} ON {} TO {}{}").format(listed, target, _grantee(grantee), option)
    return Statement(grantee, "loses" if revoke else "gains", query)


def _default_statement(
    for_roles: Sequence[str],
    schemas: Sequence[str],
    objtype: str,
    grantee: str,
    option: bool,
    privileges: Sequence[str],
    *,
    revoke: bool,
    redshift: bool = False,
) -> Statement:
    head = sql.SQL("ALTER DEFAULT PRIVILEGES FOR {} {}").format(
        sql.SQL("USER" if redshift else "ROLE"),
        sql.SQL(", ").join(map(sql.Identifier, for_roles)),
    )
    if schemas:
        head = sql.SQL("{} IN SCHEMA {}").format(
            head, sql.SQL(", ").join(map(sql.Identifier, schemas))
        )
    on = sql.SQL(DEFAULT_OBJECT_KEYWORDS[objtype])
    who = _grantee(grantee, redshift=redshift)
    if revoke:
        prefix = sql.SQL("GRANT OPTION FOR ") if option else sql.SQL("")
        query = sql.SQL("{} REVOKE {}{} ON {} FROM {}").format(
            head, prefix, _privileges(privileges), on, who
        )
    else:
        query = sql.SQL("{} GRANT {} ON {} TO {}").format(head, _privileges(privileges), on, who)
    return Statement(grantee, "loses" if revoke else "gains", query)


def _default_statements(
    grants: Iterable[DefaultGrant], *, revoke: bool, redshift: bool = False
) -> list[Statement]:
    """Default privileges, merged: ``FOR ROLE a, b IN SCHEMA x, y`` wherever the roles
    share exactly the same schemas for the same grantee and privileges."""
    privileges: dict[tuple, set[str]] = defaultdict(set)
    for grant in grants:
        key = (grant.grantee, grant.objtype, grant.grant_option, grant.for_role, grant.schema)
        privileges[key].add(grant.privilege)
    schemas: dict[tuple, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for (grantee, objtype, option, for_role, schema), names in privileges.items():
        schemas[(grantee, objtype, option, tuple(sorted(names)))][for_role].add(schema)
    statements = []
    for (grantee, objtype, option, names), by_role in sorted(schemas.items()):
        roles_by_schemas: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for for_role, in_schemas in by_role.items():
            global_ = "" in in_schemas
            scoped = tuple(sorted(in_schemas - {""}))
            if global_:
                roles_by_schemas[()].append(for_role)
            if scoped:
                roles_by_schemas[scoped].append(for_role)
        for scoped, for_roles in sorted(roles_by_schemas.items()):
            statements.append(
                _default_statement(
                    sorted(for_roles),
                    scoped,
                    objtype,
                    grantee,
                    option,
                    names,
                    revoke=revoke,
                    redshift=redshift,
                )
            )
    return statements


def _without_covered_options(revokes: Sequence[Any]) -> list[Any]:
    """Revoking a privilege also revokes its grant option; drop the redundant REVOKE."""
    plain = {_key(grant) for grant in revokes if not grant.grant_option}
    return [grant for grant in revokes if not (grant.grant_option and _key(grant) in plain)]


def _key(grant: Any) -> tuple:
    fields = dict(vars(grant))
    fields.pop("grant_option")
    return tuple(fields.values())


def _owner_statement(change: OwnerChange) -> Statement:
    if change.kind == "schema":
        target = sql.SQL("SCHEMA {}").format(sql.Identifier(change.schema))
    elif change.kind == "function":
        target = sql.SQL("ROUTINE {}").format(_routine(change.schema, change.name, change.detail))
    else:
        keyword = OWNER_KEYWORDS[change.subkind]
        target = sql.SQL("{} {}").format(
            sql.SQL(keyword), sql.Identifier(change.schema, change.name)
        )
    query = sql.SQL("ALTER {} OWNER TO {}").format(target, sql.Identifier(change.new_owner))
    return Statement(change.new_owner, "gains", query)


def _setting_statement(change: SettingChange) -> Statement:
    role = sql.Identifier(change.role)
    if change.database:
        role = sql.SQL("{} IN DATABASE {}").format(role, sql.Identifier(change.database))
    parameter = sql.Identifier(change.parameter)
    if change.value is None:
        query = sql.SQL("ALTER ROLE {} RESET {}").format(role, parameter)
    else:
        query = sql.SQL("ALTER ROLE {} SET {} = {}").format(
            role, parameter, sql.Literal(change.value)
        )
    return Statement(change.role, "changes", query)


def _membership_statement(membership: Membership, *, revoke: bool, version: int) -> Statement:
    role, member = sql.Identifier(membership.role), sql.Identifier(membership.member)
    if revoke:
        query = sql.SQL("REVOKE {} FROM {}").format(role, member)
    elif version >= 160000:
        query = sql.SQL("GRANT {} TO {} WITH INHERIT TRUE, SET TRUE").format(role, member)
    else:
        query = sql.SQL("GRANT {} TO {}").format(role, member)
    return Statement(membership.member, "loses" if revoke else "gains", query)


def render_postgres(changes: Changes) -> Plan:
    """PostgreSQL statements for a diff, in an order that runs in one transaction."""
    statements: list[Statement] = []
    passwords = {change.user: change for change in changes.passwords}
    for role in changes.create_roles:
        query = sql.SQL("CREATE ROLE {} {}").format(
            sql.Identifier(role.name), sql.SQL(" ").join(map(sql.SQL, role.attributes))
        )
        params: tuple[Any, ...] = ()
        if role.name in passwords:
            query = sql.SQL("{} PASSWORD {}").format(query, sql.Placeholder())
            params = (Secret(scram_verifier(passwords.pop(role.name).secret.reveal())),)
        statements.append(Statement(role.name, "creates", query, params))
    for role in changes.alter_roles:
        query = sql.SQL("ALTER ROLE {} {}").format(
            sql.Identifier(role.name), sql.SQL(" ").join(map(sql.SQL, role.attributes))
        )
        statements.append(Statement(role.name, "changes", query))
    for user, change in sorted(passwords.items()):
        query = sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(user), sql.Placeholder())
        verifier = Secret(scram_verifier(change.secret.reveal()))
        statements.append(Statement(user, "changes", query, (verifier,)))
    for name, limit in changes.connection_limits:
        query = sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(
            sql.Identifier(name), sql.Literal(int(limit))
        )
        statements.append(Statement(name, "changes", query))
    statements += [_setting_statement(change) for change in changes.settings]
    version = changes.server_version
    statements += [
        _membership_statement(m, revoke=True, version=version) for m in changes.revoke_memberships
    ]
    statements += [
        _membership_statement(m, revoke=False, version=version) for m in changes.grant_memberships
    ]
    for schema, owner in changes.create_schemas:
        query = sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
            sql.Identifier(schema), sql.Identifier(owner)
        )
        statements.append(Statement(owner, "gains", query))
    statements += [_owner_statement(change) for change in changes.owners]
    statements += _grant_statements(_without_covered_options(changes.revokes), revoke=True)
    statements += _grant_statements(changes.grants, revoke=False)
    statements += _default_statements(
        _without_covered_options(changes.default_revokes), revoke=True
    )
    statements += _default_statements(changes.default_grants, revoke=False)
    return Plan(
        tuple(statements), changes.notes, changes.database, "postgres", changes.unknown_roles
    )


def render_redshift(
    spec: Spec, *, database: str, passwords: Mapping[str, DesiredPassword] | None = None
) -> Plan:
    """A Redshift script for the spec: groups, users, schema and object grants,
    ``ALTER DEFAULT PRIVILEGES FOR USER … IN SCHEMA …``, database grants.

    Redshift groups cannot own schemas, so the owner group gets USAGE and CREATE and
    the schema stays with the admin (a sandbox is owned by its user). Existing objects
    are granted with ``ON ALL TABLES IN SCHEMA``; default privileges are set for every
    user that can create in a schema (Redshift sets them for users only). Redshift has
    no sequences and no CONNECT privilege; writers get no TRUNCATE (owner only there).
    """
    passwords = passwords or {}
    statements: list[Statement] = []
    notes: list[str] = []
    for role in spec.roles:
        query = sql.SQL("CREATE GROUP {}").format(sql.Identifier(role.name))
        statements.append(Statement(role.name, "creates", query))
    for user in spec.users:
        wanted = passwords.get(user.name)
        params: tuple[Any, ...] = ()
        if wanted is not None and wanted.secret is not None:
            password: sql.Composable = sql.Placeholder()
            params = (Secret(md5_verifier(wanted.secret.reveal(), user.name)),)
        else:
            password = sql.SQL("DISABLE")
            notes.append(f"user {user.name} is created with PASSWORD DISABLE (no password set)")
        query = sql.SQL("CREATE USER {} PASSWORD {} NOCREATEDB NOCREATEUSER").format(
            sql.Identifier(user.name), password
        )
        if user.member_of:
            query = sql.SQL("{} IN GROUP {}").format(
                query, sql.SQL(", ").join(map(sql.Identifier, user.member_of))
            )
        statements.append(Statement(user.name, "creates", query, params))
        limit = spec.connection_limit(user.name)
        if limit != -1:
            query = sql.SQL("ALTER USER {} CONNECTION LIMIT {}").format(
                sql.Identifier(user.name), sql.Literal(limit)
            )
            statements.append(Statement(user.name, "changes", query))
        for parameter, value in sorted(spec.login_settings(user.name).items()):
            if parameter not in REDSHIFT_USER_SETTINGS:
                notes.append(
                    f"user {user.name}: Redshift has no per-user {parameter}; set it in a "
                    "parameter group or WLM instead"
                )
                continue
            query = sql.SQL("ALTER USER {} SET {} = {}").format(
                sql.Identifier(user.name), sql.Identifier(parameter), sql.Literal(value)
            )
            statements.append(Statement(user.name, "changes", query))

    schemas = managed_schemas(spec, ())
    users = spec.user_names
    for schema, access in schemas.items():
        create = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
        if access.owner in users:
            create = sql.SQL("{} AUTHORIZATION {}").format(create, sql.Identifier(access.owner))
        statements.append(Statement(access.owner, "gains", create))

    names = sorted(schemas)
    listed = sql.SQL(", ").join(map(sql.Identifier, names))
    for template in (
        "REVOKE ALL ON SCHEMA {} FROM PUBLIC",
        "REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA {} FROM PUBLIC",
    ):
        statements.append(Statement(PUBLIC, "loses", sql.SQL(template).format(listed)))
    statements.append(
        Statement(PUBLIC, "loses", sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
    )
    target = sql.Identifier(database)
    statements.append(
        Statement(
            PUBLIC,
            "loses",
            sql.SQL("REVOKE CREATE, TEMPORARY ON DATABASE {} FROM PUBLIC").format(target),
        )
    )

    # (grantee, level) -> schemas, so each grant statement lists every schema it covers.
    levels: dict[tuple[str, str], list[str]] = defaultdict(list)
    executes: dict[str, list[str]] = defaultdict(list)
    defaults: list[DefaultGrant] = []
    for schema, access in schemas.items():
        grantees = sorted((access.writers | access.readers) - users)
        for grantee in grantees:
            level = access.level(grantee)
            assert level is not None
            levels[(grantee, level)].append(schema)
            if access.privileges(grantee, "functions"):
                executes[grantee].append(schema)
        creators = sorted(access.creators & users)
        if not creators:
            notes.append(f"schema {schema}: no user can create there; no default privileges")
        for creator in creators:
            for grantee in grantees:
                level = access.level(grantee)
                assert level is not None
                for objtype, privileges in (
                    ("tables", REDSHIFT_TABLE_PRIVILEGES[level]),
                    ("functions", access.privileges(grantee, "functions")),
                ):
                    defaults += [
                        DefaultGrant(creator, schema, objtype, grantee, privilege)  # type: ignore[arg-type]
                        for privilege in privileges
                    ]
    for (grantee, level), in_schemas in sorted(levels.items()):
        who = _grantee(grantee, redshift=True)
        listed = sql.SQL(", ").join(map(sql.Identifier, in_schemas))
        for template, privileges in (
            ("GRANT {} ON SCHEMA {} TO {}", SCHEMA_PRIVILEGES[level]),
            ("GRANT {} ON ALL TABLES IN SCHEMA {} TO {}", REDSHIFT_TABLE_PRIVILEGES[level]),
        ):
            query = sql.SQL(template).format(_privileges(privileges), listed, who)
            statements.append(Statement(grantee, "gains", query))
    for grantee, in_schemas in sorted(executes.items()):
        query = sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {} TO {}").format(
            sql.SQL(", ").join(map(sql.Identifier, in_schemas)), _grantee(grantee, redshift=True)
        )
        statements.append(Statement(grantee, "gains", query))
    statements += _default_statements(defaults, revoke=False, redshift=True)
    creators = sorted(set().union(*(a.creators for a in schemas.values())) & users)
    statements += _default_statements(
        [DefaultGrant(creator, "", "functions", PUBLIC, "EXECUTE") for creator in creators],
        revoke=True,
        redshift=True,
    )
    for role in spec.roles:
        privileges = [REDSHIFT_DATABASE_PRIVILEGES[p] for p in role.database if p != "connect"]
        if privileges:
            query = sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                _privileges(privileges), target, _grantee(role.name, redshift=True)
            )
            statements.append(Statement(role.name, "gains", query))
    patterns = [entry.name for entry in spec.schemas if entry.is_pattern]
    if patterns:
        notes.append(
            f"patterns ({', '.join(patterns)}) cover only the schemas the spec declares here; "
            "declare new raw schemas by name for Redshift"
        )
    return Plan(tuple(statements), tuple(notes), database, "redshift")
