"""What the spec wants, and how that differs from what the catalog holds.

Pure functions: `desired_state` turns a spec and a snapshot into the privileges that
should exist; `diff` compares the two as sets and returns `Changes`, every list
sorted so plans are stable.

The model, in short:

* A managed schema is owned by its ``owner`` role. Its *writers* are the owner and
  the roles with ``write`` on it; its *readers* the roles with ``read``.
* Whoever may create in a schema (a writer, or a login user in a writer role) is a
  *creator*; objects a creator makes stay theirs. Objects owned by anyone else are
  handed to the schema owner.
* Every object gets the writers' and readers' privileges explicitly, and every
  creator gets default privileges saying the same for what it creates next, so a
  table dbt drops and recreates, or a new raw table, is readable at once.
* Functions are executable by the schema's writers and by the roles whose
  ``execute:`` names the schema; reading a schema gives no EXECUTE (a
  ``SECURITY DEFINER`` function runs with its owner's rights).
* PUBLIC gets nothing in managed schemas (no EXECUTE on functions, also for future
  functions), nothing on the database, and no CREATE on schema ``public``; managed
  roles get nothing granted directly on schema ``public``.
* Every managed role carries exactly the ``ALTER ROLE … SET`` settings and the
  connection limit the spec gives it (none and -1 unless it says so).
* Privileges of managed roles (or PUBLIC) that the spec does not imply are revoked;
  privileges of other roles, and objects outside managed schemas, are only reported.
  Roles the spec does not know are reported (``Changes.unknown_roles``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from roles.exceptions import DatabaseMismatch, UnsafePlan
from roles.inspect import PUBLIC, DefaultGrant, DefaultObjectType, Grant, Membership, Snapshot
from roles.passwords import DesiredPassword, Secret, password_matches
from roles.spec import Level, Spec

TABLE_PRIVILEGES: dict[Level, frozenset[str]] = {
    "read": frozenset({"SELECT"}),
    "write": frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"}),
}
SEQUENCE_PRIVILEGES: dict[Level, frozenset[str]] = {
    "read": frozenset({"SELECT"}),
    "write": frozenset({"USAGE", "SELECT", "UPDATE"}),
}
# Readers get no EXECUTE from their level; only `execute:` in the spec gives it.
FUNCTION_PRIVILEGES: dict[Level, frozenset[str]] = {
    "read": frozenset(),
    "write": frozenset({"EXECUTE"}),
}
EXECUTE_PRIVILEGES = frozenset({"EXECUTE"})
SCHEMA_PRIVILEGES: dict[Level, frozenset[str]] = {
    "read": frozenset({"USAGE"}),
    "write": frozenset({"USAGE", "CREATE"}),
}
OBJECT_PRIVILEGES: dict[DefaultObjectType, dict[Level, frozenset[str]]] = {
    "tables": TABLE_PRIVILEGES,
    "sequences": SEQUENCE_PRIVILEGES,
    "functions": FUNCTION_PRIVILEGES,
}
DATABASE_PRIVILEGE_NAMES = {"connect": "CONNECT", "temp": "TEMPORARY", "create": "CREATE"}
MANAGED_DATABASE_PRIVILEGES = frozenset(DATABASE_PRIVILEGE_NAMES.values())

RoleAttribute = Literal[
    "LOGIN",
    "NOLOGIN",
    "NOSUPERUSER",
    "NOCREATEROLE",
    "NOCREATEDB",
    "NOREPLICATION",
    "NOBYPASSRLS",
    "INHERIT",
]
# Attributes every managed role must have: (snapshot field, wanted value, keyword).
REQUIRED_ATTRIBUTES: tuple[tuple[str, bool, RoleAttribute], ...] = (
    ("superuser", False, "NOSUPERUSER"),
    ("createrole", False, "NOCREATEROLE"),
    ("createdb", False, "NOCREATEDB"),
    ("replication", False, "NOREPLICATION"),
    ("bypassrls", False, "NOBYPASSRLS"),
    ("inherit", True, "INHERIT"),
)


@dataclass(frozen=True)
class SchemaAccess:
    """Who may do what in one managed schema."""

    schema: str
    owner: str
    stage: str
    writers: frozenset[str]  # the owner and roles with write
    readers: frozenset[str]  # roles with read (and not write)
    creators: frozenset[str]  # may create, so may own objects: writers and their users
    declared: bool = True  # False: matched by a pattern, never created
    executors: frozenset[str] = frozenset()  # readers with `execute:` on the schema

    def level(self, role: str) -> Level | None:
        if role in self.writers:
            return "write"
        if role in self.readers:
            return "read"
        return None

    def privileges(self, role: str, objtype: DefaultObjectType) -> frozenset[str]:
        """What ``role`` gets on an object of this kind in the schema (not as owner)."""
        level = self.level(role)
        if level is None:
            return frozenset()
        if objtype == "functions" and role in self.executors:
            return EXECUTE_PRIVILEGES
        return OBJECT_PRIVILEGES[objtype][level]


def schema_access(spec: Spec, schema: str) -> SchemaAccess:
    """The writers, readers and creators of a schema the spec manages."""
    entry = spec.schema_for(schema)
    if entry is None:
        raise KeyError(schema)
    writers = {entry.owner}
    readers = set()
    for role in spec.roles:
        level = role.level(schema)
        if level == "write":
            writers.add(role.name)
        elif level == "read":
            readers.add(role.name)
    creators = set(writers)
    creators.update(user.name for user in spec.users if writers.intersection(user.member_of))
    executors = {role.name for role in spec.roles if role.may_execute(schema)}
    return SchemaAccess(
        schema=schema,
        owner=entry.owner,
        stage=entry.stage,
        writers=frozenset(writers),
        readers=frozenset(readers - writers),
        creators=frozenset(creators),
        declared=not entry.is_pattern,
        executors=frozenset(executors & (writers | readers)),
    )


def managed_schemas(spec: Spec, existing: Iterable[str]) -> dict[str, SchemaAccess]:
    """Declared schemas and sandboxes, plus existing schemas a pattern matches."""
    names = set(spec.declared_schemas())
    names.update(name for name in existing if spec.schema_for(name) is not None)
    return {name: schema_access(spec, name) for name in sorted(names)}


def database_grants(spec: Spec, database: str) -> frozenset[Grant]:
    """Database privileges the spec grants (PUBLIC gets none)."""
    return frozenset(
        Grant("database", "", database, role.name, DATABASE_PRIVILEGE_NAMES[privilege])
        for role in spec.roles
        for privilege in role.database
    )


def default_grants_for(access: SchemaAccess) -> frozenset[DefaultGrant]:
    """Default privileges in one schema for every role that can create there."""
    wanted = set()
    for creator in access.creators:
        for grantee in access.writers | access.readers:
            if grantee == creator:
                continue
            for objtype in OBJECT_PRIVILEGES:
                for privilege in access.privileges(grantee, objtype):
                    wanted.add(DefaultGrant(creator, access.schema, objtype, grantee, privilege))
    return frozenset(wanted)


@dataclass(frozen=True)
class Desired:
    """The state the spec asks for, resolved against the objects that exist."""

    database: str
    roles: Mapping[str, bool]  # name -> login
    memberships: frozenset[Membership]
    schemas: Mapping[str, SchemaAccess]
    owners: Mapping[tuple[str, str, str, str], str]  # (kind, schema, name, detail) -> owner
    grants: frozenset[Grant]
    default_grants: frozenset[DefaultGrant]
    passwords: Mapping[str, DesiredPassword] = field(default_factory=dict)
    settings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    connection_limits: Mapping[str, int] = field(default_factory=dict)

    @property
    def creators(self) -> frozenset[str]:
        return frozenset().union(*(access.creators for access in self.schemas.values()))


def desired_state(
    spec: Spec, snapshot: Snapshot, passwords: Mapping[str, DesiredPassword] | None = None
) -> Desired:
    """Resolve the spec against a snapshot: which schemas, objects and grants.

    Raises:
        DatabaseMismatch: the spec names another database.
        UnsafePlan: the spec manages the role running the plan.
    """
    if spec.database and spec.database != snapshot.database:
        raise DatabaseMismatch(spec.database, snapshot.database)
    if snapshot.current_user in spec.managed_names:
        raise UnsafePlan(
            snapshot.current_user,
            f"the spec manages {snapshot.current_user!r}, the role running this plan, and "
            "would strip its attributes; connect as another admin role (--dsn or the "
            "<target>_admin output of the profile)",
        )
    schemas = managed_schemas(spec, snapshot.schemas)
    owners: dict[tuple[str, str, str, str], str] = {}
    grants = set(database_grants(spec, snapshot.database))
    default_grants: set[DefaultGrant] = set()
    for access in schemas.values():
        for grantee in (access.writers | access.readers) - {access.owner}:
            level = access.level(grantee)
            assert level is not None
            grants.update(
                Grant("schema", access.schema, "", grantee, privilege)
                for privilege in SCHEMA_PRIVILEGES[level]
            )
        default_grants |= default_grants_for(access)

    def add_object(kind: str, schema: str, name: str, detail: str, owner: str) -> None:
        access = schemas[schema]
        owner = owner if owner in access.creators else access.owner
        owners[(kind, schema, name, detail)] = owner
        objtype: DefaultObjectType = (
            "functions" if kind == "function" else "sequences" if kind == "sequence" else "tables"
        )
        for grantee in access.writers | access.readers:
            if grantee == owner:
                continue
            grants.update(
                Grant(kind, schema, name, grantee, privilege, detail)  # type: ignore[arg-type]
                for privilege in access.privileges(grantee, objtype)
            )

    for relation in snapshot.relations:
        if relation.schema in schemas:
            add_object(relation.kind, relation.schema, relation.name, "", relation.owner)
    for function in snapshot.functions:
        if function.schema in schemas:
            add_object("function", function.schema, function.name, function.args, function.owner)

    roles = {role.name: False for role in spec.roles} | {user.name: True for user in spec.users}
    memberships = frozenset(
        Membership(group, user.name) for user in spec.users for group in user.member_of
    )
    return Desired(
        database=snapshot.database,
        roles=roles,
        memberships=memberships,
        schemas=schemas,
        owners=owners,
        grants=frozenset(grants),
        default_grants=frozenset(default_grants),
        passwords=dict(passwords or {}),
        settings={name: spec.login_settings(name) for name in roles},
        connection_limits={name: spec.connection_limit(name) for name in roles},
    )


@dataclass(frozen=True, order=True)
class RoleChange:
    """A role to create (``create``) or whose attributes to change."""

    name: str
    create: bool
    attributes: tuple[RoleAttribute, ...]


@dataclass(frozen=True, order=True)
class SettingChange:
    """``ALTER ROLE role [IN DATABASE database] SET parameter = value`` (or RESET, when
    ``value`` is None)."""

    role: str
    parameter: str
    value: str | None
    old_value: str | None
    database: str = ""  # set only for ALTER ROLE … IN DATABASE (always reset)


@dataclass(frozen=True, order=True)
class UnknownRole:
    """A role on the server the spec neither manages nor lists under ``known_roles``."""

    name: str
    attributes: tuple[str, ...]  # LOGIN, SUPERUSER, CREATEROLE, ...

    def describe(self) -> str:
        shown = f" ({' '.join(self.attributes)})" if self.attributes else ""
        return (
            f"role {self.name}{shown} is not in the spec; drop it, add it to the spec, or "
            "list it under known_roles:"
        )


@dataclass(frozen=True)
class PasswordChange:
    user: str
    secret: Secret
    origin: str


@dataclass(frozen=True, order=True)
class OwnerChange:
    """Hand an object (or a schema: ``name`` empty) to a new owner."""

    kind: str  # schema, table, sequence, function
    schema: str
    name: str
    detail: str  # function arguments
    subkind: str  # relkind or prokind, to pick ALTER TABLE / VIEW / ...
    old_owner: str
    new_owner: str


@dataclass(frozen=True)
class Changes:
    """Everything to do, in sets turned into sorted tuples."""

    database: str
    server_version: int
    create_roles: tuple[RoleChange, ...] = ()
    alter_roles: tuple[RoleChange, ...] = ()
    passwords: tuple[PasswordChange, ...] = ()
    grant_memberships: tuple[Membership, ...] = ()
    revoke_memberships: tuple[Membership, ...] = ()
    create_schemas: tuple[tuple[str, str], ...] = ()  # (schema, owner)
    owners: tuple[OwnerChange, ...] = ()
    grants: tuple[Grant, ...] = ()
    revokes: tuple[Grant, ...] = ()
    default_grants: tuple[DefaultGrant, ...] = ()
    default_revokes: tuple[DefaultGrant, ...] = ()
    settings: tuple[SettingChange, ...] = ()
    connection_limits: tuple[tuple[str, int], ...] = ()  # (role, limit)
    notes: tuple[str, ...] = ()
    unknown_roles: tuple[UnknownRole, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not any(
            (
                self.create_roles,
                self.alter_roles,
                self.passwords,
                self.grant_memberships,
                self.revoke_memberships,
                self.create_schemas,
                self.owners,
                self.grants,
                self.revokes,
                self.default_grants,
                self.default_revokes,
                self.settings,
                self.connection_limits,
            )
        )


def _role_changes(
    desired: Desired, snapshot: Snapshot
) -> tuple[list[RoleChange], list[RoleChange], list[PasswordChange], list[str]]:
    create, alter, passwords, notes = [], [], [], []
    for name, login in sorted(desired.roles.items()):
        wanted = desired.passwords.get(name)
        secret = wanted.secret if wanted else None
        actual = snapshot.roles.get(name)
        if actual is None:
            create.append(RoleChange(name, True, ("LOGIN",) if login else ("NOLOGIN",)))
            if secret is not None:
                passwords.append(PasswordChange(name, secret, wanted.origin))  # type: ignore[union-attr]
            elif login:
                why = wanted.origin if wanted else "no password_env"
                notes.append(f"user {name} is created LOGIN without a password ({why})")
            continue
        attributes: list[RoleAttribute] = []
        if actual.login != login:
            attributes.append("LOGIN" if login else "NOLOGIN")
        for field_name, value, keyword in REQUIRED_ATTRIBUTES:
            if getattr(actual, field_name) != value:
                attributes.append(keyword)
        if attributes:
            alter.append(RoleChange(name, False, tuple(attributes)))
        if secret is None or not login:
            continue
        if not actual.password_known:
            notes.append(
                f"user {name}: stored passwords are readable only by a superuser; "
                f"its password was left as it is"
            )
        elif not password_matches(actual.password, secret.reveal(), name):
            passwords.append(PasswordChange(name, secret, wanted.origin))  # type: ignore[union-attr]
    return create, alter, passwords, notes


def _membership_changes(
    spec: Spec, desired: Desired, snapshot: Snapshot
) -> tuple[list[Membership], list[Membership]]:
    managed = spec.managed_names
    untouchable = snapshot.superusers | {snapshot.current_user}
    actual = [
        membership
        for membership in snapshot.memberships
        if membership.member in managed
        or (membership.role in managed and membership.member not in untouchable)
    ]
    actual_pairs = {(m.role, m.member) for m in actual}
    wanted_pairs = {(m.role, m.member) for m in desired.memberships}
    grant = {Membership(role, member) for role, member in wanted_pairs - actual_pairs}
    if snapshot.server_version >= 160000:
        # A membership without INHERIT or SET is granted again with both.
        grant.update(
            Membership(m.role, m.member)
            for m in actual
            if (m.role, m.member) in wanted_pairs and not (m.inherit and m.set)
        )
    revoke = {Membership(role, member) for role, member in actual_pairs - wanted_pairs}
    return sorted(grant), sorted(revoke)


def _effective_owner(desired: Desired, grant: Grant) -> str | None:
    if grant.kind == "database":
        return None
    if grant.kind == "schema":
        access = desired.schemas.get(grant.schema)
        return access.owner if access else None
    kind = "table" if grant.kind == "column" else grant.kind
    detail = "" if grant.kind == "column" else grant.detail
    return desired.owners.get((kind, grant.schema, grant.name, detail))


def _grant_scope(spec: Spec, desired: Desired, snapshot: Snapshot) -> tuple[set[Grant], list[str]]:
    """The actual grants the plan manages, and notes on the ones it leaves alone."""
    grantees = spec.managed_names | {PUBLIC}
    in_scope: set[Grant] = set()
    outside: dict[str, set[str]] = defaultdict(set)
    unmanaged: dict[str, set[str]] = defaultdict(set)
    for grant in snapshot.grants:
        if grant.kind == "database":
            if grant.grantee in grantees and grant.privilege in MANAGED_DATABASE_PRIVILEGES:
                in_scope.add(grant)
            continue
        if grant.schema not in desired.schemas:
            if grant.kind == "schema" and grant.schema == "public" and grant.grantee == PUBLIC:
                if grant.privilege == "CREATE":
                    in_scope.add(grant)
            elif (
                grant.kind == "schema"
                and grant.schema == "public"
                and (grant.grantee in spec.managed_names)
            ):
                in_scope.add(grant)  # managed roles get nothing directly on public
            elif grant.grantee in spec.managed_names:
                outside[grant.schema].add(grant.grantee)
            continue
        if grant.grantee not in grantees:
            unmanaged[grant.schema].add(grant.grantee)
        elif grant.grantee != _effective_owner(desired, grant):
            in_scope.add(grant)
    notes = [
        f"schema {schema} is not managed: privileges of {', '.join(sorted(names))} there "
        "were left alone"
        for schema, names in sorted(outside.items())
    ]
    notes += [
        f"schema {schema}: privileges of {', '.join(sorted(names))}, which the spec does not "
        "manage, were left alone"
        for schema, names in sorted(unmanaged.items())
    ]
    return in_scope, notes


def _default_scope(
    spec: Spec, desired: Desired, snapshot: Snapshot
) -> tuple[set[DefaultGrant], list[str]]:
    grantees = spec.managed_names | {PUBLIC}
    creators = desired.creators
    in_scope: set[DefaultGrant] = set()
    outside: set[str] = set()
    for grant in snapshot.default_grants:
        if grant.for_role not in spec.managed_names or grant.grantee not in grantees:
            continue
        if grant.schema in desired.schemas or (not grant.schema and grant.for_role in creators):
            in_scope.add(grant)
        elif grant.schema and grant.grantee != PUBLIC:
            outside.add(grant.schema)
    # A role created by this plan starts with the built-in default: PUBLIC may execute.
    in_scope.update(
        DefaultGrant(creator, "", "functions", PUBLIC, "EXECUTE")
        for creator in creators
        if creator not in snapshot.roles
    )
    notes = [
        f"schema {schema} is not managed: its default privileges were left alone"
        for schema in sorted(outside)
    ]
    return in_scope, notes


def _owner_changes(desired: Desired, snapshot: Snapshot) -> list[OwnerChange]:
    changes = []
    for schema, access in desired.schemas.items():
        actual = snapshot.schemas.get(schema)
        if actual is not None and actual != access.owner:
            changes.append(OwnerChange("schema", schema, "", "", "", actual, access.owner))
    for relation in snapshot.relations:
        wanted = desired.owners.get((relation.kind, relation.schema, relation.name, ""))
        if wanted and wanted != relation.owner and not relation.linked:
            changes.append(
                OwnerChange(
                    relation.kind,
                    relation.schema,
                    relation.name,
                    "",
                    relation.relkind,
                    relation.owner,
                    wanted,
                )
            )
    for function in snapshot.functions:
        wanted = desired.owners.get(("function", function.schema, function.name, function.args))
        if wanted and wanted != function.owner:
            changes.append(
                OwnerChange(
                    "function",
                    function.schema,
                    function.name,
                    function.args,
                    function.prokind,
                    function.owner,
                    wanted,
                )
            )
    return sorted(changes)


ROLE_ATTRIBUTE_NAMES = (
    ("login", "LOGIN"),
    ("superuser", "SUPERUSER"),
    ("createrole", "CREATEROLE"),
    ("createdb", "CREATEDB"),
    ("replication", "REPLICATION"),
    ("bypassrls", "BYPASSRLS"),
)


def unknown_roles(spec: Spec, snapshot: Snapshot) -> list[UnknownRole]:
    """Roles on the server that the spec does not know: not managed, not under
    ``known_roles:``, not built in (``pg_*``) and not the role running the tool."""
    found = []
    for name, state in sorted(snapshot.roles.items()):
        if (
            name in spec.managed_names
            or name.startswith("pg_")
            or name == snapshot.current_user
            or spec.is_known(name)
        ):
            continue
        attributes = tuple(
            word for field_name, word in ROLE_ATTRIBUTE_NAMES if getattr(state, field_name)
        )
        found.append(UnknownRole(name, attributes))
    return found


def _setting_changes(
    desired: Desired, snapshot: Snapshot
) -> tuple[list[SettingChange], list[tuple[str, int]]]:
    settings: list[SettingChange] = []
    limits: list[tuple[str, int]] = []
    for name, wanted in sorted(desired.settings.items()):
        actual = snapshot.settings.get(name, {})
        for parameter in sorted(set(wanted) | set(actual)):
            if wanted.get(parameter) != actual.get(parameter):
                settings.append(
                    SettingChange(name, parameter, wanted.get(parameter), actual.get(parameter))
                )
        # ALTER ROLE … IN DATABASE … SET overrides the role's own; the spec sets none.
        for parameter, value in sorted(snapshot.database_settings.get(name, {}).items()):
            settings.append(SettingChange(name, parameter, None, value, desired.database))
        state = snapshot.roles.get(name)
        limit = desired.connection_limits.get(name, -1)
        if (state.connection_limit if state else -1) != limit:
            limits.append((name, limit))
    return settings, limits


def diff(spec: Spec, desired: Desired, snapshot: Snapshot) -> Changes:
    """Compare desired and actual state; every list comes back sorted."""
    create_roles, alter_roles, passwords, notes = _role_changes(desired, snapshot)
    grant_memberships, revoke_memberships = _membership_changes(spec, desired, snapshot)
    actual_grants, grant_notes = _grant_scope(spec, desired, snapshot)
    actual_defaults, default_notes = _default_scope(spec, desired, snapshot)
    unmanaged_schemas = [
        f"schema {schema} (owner {owner}) is not in the spec and was left alone; "
        "declare it under schemas: to manage it"
        for schema, owner in sorted(snapshot.schemas.items())
        if owner in spec.managed_names and schema not in desired.schemas
    ]
    create_schemas = tuple(
        (schema, access.owner)
        for schema, access in desired.schemas.items()
        if schema not in snapshot.schemas
    )
    settings, limits = _setting_changes(desired, snapshot)
    return Changes(
        database=desired.database,
        server_version=snapshot.server_version,
        create_roles=tuple(create_roles),
        alter_roles=tuple(alter_roles),
        passwords=tuple(passwords),
        grant_memberships=tuple(grant_memberships),
        revoke_memberships=tuple(revoke_memberships),
        create_schemas=create_schemas,
        owners=tuple(_owner_changes(desired, snapshot)),
        grants=tuple(sorted(desired.grants - actual_grants)),
        revokes=tuple(sorted(actual_grants - desired.grants)),
        default_grants=tuple(sorted(desired.default_grants - actual_defaults)),
        default_revokes=tuple(sorted(actual_defaults - desired.default_grants)),
        settings=tuple(settings),
        connection_limits=tuple(limits),
        notes=tuple(
            notes
            + unmanaged_schemas
            + grant_notes
            + default_notes
            + security_definer_notes(desired, snapshot)
        ),
        unknown_roles=tuple(unknown_roles(spec, snapshot)),
    )


def security_definer_notes(desired: Desired, snapshot: Snapshot) -> list[str]:
    """SECURITY DEFINER functions in managed schemas: they run with their owner's rights,
    so whoever may execute one acts as its owner."""
    return [
        f"function {function.schema}.{function.name}({function.args}) is SECURITY DEFINER "
        f"(runs as {function.owner}); only its owner and the roles the spec lets execute "
        f"in {function.schema} may call it"
        for function in snapshot.functions
        if function.security_definer and function.schema in desired.schemas
    ]
