"""Read the catalog once into a `Snapshot`: roles, memberships, schemas, objects and
every privilege on them, default privileges included.

ACLs are read with ``aclexplode(coalesce(acl, acldefault(...)))``, so an object that
was never granted on shows its implicit defaults (PUBLIC may EXECUTE a new function,
CONNECT to a new database). Privileges an owner holds on its own object are left out:
they come with ownership and are never managed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import psycopg2.extensions

ObjectKind = Literal["database", "schema", "table", "sequence", "function", "column"]
DefaultObjectType = Literal["tables", "sequences", "functions"]

PUBLIC = "PUBLIC"
SYSTEM_SCHEMA_FILTER = "n.nspname !~ '^pg_' and n.nspname <> 'information_schema'"
_GRANTEE = f"case when acl.grantee = 0 then '{PUBLIC}' else pg_get_userbyid(acl.grantee) end"
_NOT_EXTENSION_MEMBER = """not exists (
        select 1 from pg_depend dep
        where dep.classid = '{catalog}'::regclass and dep.objid = {oid} and dep.deptype = 'e'
    )"""

SERVER_QUERY = """
select
    current_database(),
    pg_get_userbyid(d.datdba),
    current_user,
    (select rolsuper from pg_roles where rolname = current_user),
    current_setting('server_version_num')::int
from pg_database as d
where d.datname = current_database()
"""

ROLES_QUERY = """
select rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication,
    rolbypassrls, rolinherit, rolconnlimit
from pg_catalog.pg_roles
"""

# ALTER ROLE … SET (every database, setdatabase 0) and ALTER ROLE … IN DATABASE … SET
# for this database; "name=value" items.
ROLE_SETTINGS_QUERY = """
select pg_catalog.pg_get_userbyid(s.setrole), s.setdatabase <> 0, s.setconfig
from pg_catalog.pg_db_role_setting as s
where s.setrole <> 0
    and (s.setdatabase = 0 or s.setdatabase = (
        select d.oid from pg_catalog.pg_database as d where d.datname = current_database()
    ))
"""

# Commands the tool's own sessions run first: names resolve in pg_catalog only, so
# nothing a user creates (a table, view, function or operator in a schema they can
# write) can stand in for a catalog object while a superuser reads the catalog.
SAFE_SEARCH_PATH = "pg_catalog, pg_temp"

# Superusers only: the stored password verifier, to tell whether it must change.
PASSWORDS_QUERY = "select rolname, rolpassword from pg_authid"

MEMBERSHIPS_QUERY = """
select r.rolname, m.rolname, am.inherit_option, am.set_option
from pg_auth_members as am
join pg_roles as r on r.oid = am.roleid
join pg_roles as m on m.oid = am.member
"""

# PostgreSQL 15 has no per-grant options: inheritance is the member's attribute.
MEMBERSHIPS_QUERY_PG15 = """
select r.rolname, m.rolname, m.rolinherit, true
from pg_auth_members as am
join pg_roles as r on r.oid = am.roleid
join pg_roles as m on m.oid = am.member
"""

DATABASE_GRANTS_QUERY = f"""
select {_GRANTEE}, acl.privilege_type, acl.is_grantable
from pg_database as d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) as acl
where d.datname = current_database() and acl.grantee <> d.datdba
"""

SCHEMAS_QUERY = f"""
select n.nspname, pg_get_userbyid(n.nspowner)
from pg_namespace as n
where {SYSTEM_SCHEMA_FILTER}
"""

SCHEMA_GRANTS_QUERY = f"""
select n.nspname, {_GRANTEE}, acl.privilege_type, acl.is_grantable
from pg_namespace as n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) as acl
where {SYSTEM_SCHEMA_FILTER} and acl.grantee <> n.nspowner
"""

_RELATION_FILTER = f"""c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
    and {SYSTEM_SCHEMA_FILTER}
    and {_NOT_EXTENSION_MEMBER.format(catalog="pg_class", oid="c.oid")}"""

RELATIONS_QUERY = f"""
select n.nspname, c.relname, c.relkind::text, pg_get_userbyid(c.relowner),
    c.relkind = 'S' and exists (
        select 1 from pg_depend as dep
        where dep.classid = 'pg_class'::regclass and dep.objid = c.oid
            and dep.refclassid = 'pg_class'::regclass and dep.deptype in ('a', 'i')
    )
from pg_class as c
join pg_namespace as n on n.oid = c.relnamespace
where {_RELATION_FILTER}
"""

RELATION_GRANTS_QUERY = f"""
select n.nspname, c.relname, c.relkind::text, {_GRANTEE}, acl.privilege_type, acl.is_grantable
from pg_class as c
join pg_namespace as n on n.oid = c.relnamespace,
    aclexplode(coalesce(
        c.relacl,
        acldefault(case when c.relkind = 'S' then 's' else 'r' end::"char", c.relowner)
    )) as acl
where {_RELATION_FILTER} and acl.grantee <> c.relowner
"""

COLUMN_GRANTS_QUERY = f"""
select n.nspname, c.relname, a.attname, {_GRANTEE}, acl.privilege_type, acl.is_grantable
from pg_attribute as a
join pg_class as c on c.oid = a.attrelid
join pg_namespace as n on n.oid = c.relnamespace,
    aclexplode(a.attacl) as acl
where a.attacl is not null and a.attnum > 0 and not a.attisdropped
    and {_RELATION_FILTER} and acl.grantee <> c.relowner
"""

_FUNCTION_FILTER = f"""{SYSTEM_SCHEMA_FILTER}
    and {_NOT_EXTENSION_MEMBER.format(catalog="pg_proc", oid="p.oid")}"""

FUNCTIONS_QUERY = f"""
select n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prokind::text,
    pg_get_userbyid(p.proowner), p.prosecdef
from pg_proc as p
join pg_namespace as n on n.oid = p.pronamespace
where {_FUNCTION_FILTER}
"""

FUNCTION_GRANTS_QUERY = f"""
select n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), {_GRANTEE},
    acl.privilege_type, acl.is_grantable
from pg_proc as p
join pg_namespace as n on n.oid = p.pronamespace,
    aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) as acl
where {_FUNCTION_FILTER} and acl.grantee <> p.proowner
"""

# Schema-specific entries add to the global ones; a role with no global entry for
# functions has the built-in default, which lets PUBLIC execute: list it explicitly.
DEFAULT_GRANTS_QUERY = f"""
select pg_get_userbyid(d.defaclrole), coalesce(n.nspname, ''), d.defaclobjtype::text,
    {_GRANTEE}, acl.privilege_type, acl.is_grantable
from pg_default_acl as d
left join pg_namespace as n on n.oid = d.defaclnamespace,
    aclexplode(d.defaclacl) as acl
where acl.grantee <> d.defaclrole
union all
select r.rolname, '', 'f', '{PUBLIC}', 'EXECUTE', false
from pg_roles as r
where not exists (
    select 1 from pg_default_acl as d
    where d.defaclrole = r.oid and d.defaclnamespace = 0 and d.defaclobjtype = 'f'
)
"""

DEFAULT_OBJECT_TYPES: dict[str, DefaultObjectType] = {
    "r": "tables",
    "S": "sequences",
    "f": "functions",
}


@dataclass(frozen=True, order=True)
class Grant:
    """One privilege on one object for one grantee (a role name or ``PUBLIC``).

    ``schema`` is empty for the database; ``name`` is empty for a schema. ``detail``
    is a function's identity arguments or a column's name.
    """

    kind: ObjectKind
    schema: str
    name: str
    grantee: str
    privilege: str
    detail: str = ""
    grant_option: bool = False


@dataclass(frozen=True, order=True)
class DefaultGrant:
    """A default privilege: objects ``for_role`` creates in ``schema`` (empty: anywhere)."""

    for_role: str
    schema: str
    objtype: DefaultObjectType
    grantee: str
    privilege: str
    grant_option: bool = False


@dataclass(frozen=True, order=True)
class Membership:
    """``member`` belongs to ``role``; PostgreSQL 16+ options (``inherit``, ``set``)."""

    role: str
    member: str
    inherit: bool = True
    set: bool = True


@dataclass(frozen=True)
class RoleState:
    name: str
    login: bool = False
    superuser: bool = False
    createrole: bool = False
    createdb: bool = False
    replication: bool = False
    bypassrls: bool = False
    inherit: bool = True
    connection_limit: int = -1
    password: str | None = None
    password_known: bool = False


@dataclass(frozen=True, order=True)
class Relation:
    schema: str
    name: str
    relkind: str
    owner: str
    linked: bool = False  # a sequence owned by a column: its owner follows the table

    @property
    def kind(self) -> ObjectKind:
        return "sequence" if self.relkind == "S" else "table"


@dataclass(frozen=True, order=True)
class Function:
    schema: str
    name: str
    args: str
    prokind: str
    owner: str
    security_definer: bool = False


@dataclass(frozen=True)
class Snapshot:
    """Everything the plan needs to know about the server, read in one go."""

    database: str
    database_owner: str
    current_user: str
    is_superuser: bool
    server_version: int
    roles: Mapping[str, RoleState] = field(default_factory=dict)
    memberships: frozenset[Membership] = frozenset()
    schemas: Mapping[str, str] = field(default_factory=dict)  # name -> owner
    relations: tuple[Relation, ...] = ()
    functions: tuple[Function, ...] = ()
    grants: frozenset[Grant] = frozenset()
    default_grants: frozenset[DefaultGrant] = frozenset()
    # role -> parameter -> value, from ALTER ROLE … SET (every database) and
    # ALTER ROLE … IN DATABASE <this one> SET.
    settings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    database_settings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def superusers(self) -> frozenset[str]:
        return frozenset(name for name, role in self.roles.items() if role.superuser)


def _grants(
    kind: ObjectKind,
    schema: str,
    name: str,
    grantee: str,
    privilege: str,
    grantable: bool,
    detail: str = "",
) -> list[Grant]:
    plain = Grant(kind, schema, name, grantee, privilege, detail)
    if not grantable:
        return [plain]
    return [plain, Grant(kind, schema, name, grantee, privilege, detail, grant_option=True)]


def inspect(conn: psycopg2.extensions.connection) -> Snapshot:
    """Read the catalog of the connected database into a `Snapshot`.

    The reads share one transaction, rolled back at the end (nothing is written),
    with ``search_path`` set to pg_catalog only (see `guard_session`).
    """
    with conn.cursor() as cur:
        guard_session(cur)
        cur.execute(SERVER_QUERY)
        database, database_owner, current_user, is_superuser, version = cur.fetchone()

        passwords: dict[str, str | None] = {}
        if is_superuser:
            cur.execute(PASSWORDS_QUERY)
            passwords = dict(cur.fetchall())
        cur.execute(ROLES_QUERY)
        roles = {
            row[0]: RoleState(
                *row,
                password=passwords.get(row[0]),
                password_known=bool(is_superuser),
            )
            for row in cur.fetchall()
        }

        cur.execute(MEMBERSHIPS_QUERY if version >= 160000 else MEMBERSHIPS_QUERY_PG15)
        memberships = frozenset(Membership(*row) for row in cur.fetchall())

        cur.execute(SCHEMAS_QUERY)
        schemas = dict(cur.fetchall())

        grants: list[Grant] = []
        cur.execute(DATABASE_GRANTS_QUERY)
        for grantee, privilege, grantable in cur.fetchall():
            grants += _grants("database", "", database, grantee, privilege, grantable)
        cur.execute(SCHEMA_GRANTS_QUERY)
        for schema, grantee, privilege, grantable in cur.fetchall():
            grants += _grants("schema", schema, "", grantee, privilege, grantable)

        cur.execute(RELATIONS_QUERY)
        relations = tuple(sorted(Relation(*row) for row in cur.fetchall()))
        cur.execute(RELATION_GRANTS_QUERY)
        for schema, name, relkind, grantee, privilege, grantable in cur.fetchall():
            kind: ObjectKind = "sequence" if relkind == "S" else "table"
            grants += _grants(kind, schema, name, grantee, privilege, grantable)
        cur.execute(COLUMN_GRANTS_QUERY)
        for schema, name, column, grantee, privilege, grantable in cur.fetchall():
            grants += _grants("column", schema, name, grantee, privilege, grantable, column)

        cur.execute(FUNCTIONS_QUERY)
        functions = tuple(sorted(Function(*row) for row in cur.fetchall()))
        cur.execute(FUNCTION_GRANTS_QUERY)
        for schema, name, args, grantee, privilege, grantable in cur.fetchall():
            grants += _grants("function", schema, name, grantee, privilege, grantable, args)

        settings: dict[str, dict[str, str]] = {}
        database_settings: dict[str, dict[str, str]] = {}
        cur.execute(ROLE_SETTINGS_QUERY)
        for role, in_database, items in cur.fetchall():
            into = database_settings if in_database else settings
            for item in items or ():
                key, _, value = item.partition("=")
                into.setdefault(role, {})[key] = value

        cur.execute(DEFAULT_GRANTS_QUERY)
        default_grants = set()
        for for_role, schema, objtype, grantee, privilege, grantable in cur.fetchall():
            if objtype not in DEFAULT_OBJECT_TYPES:
                continue
            kind = DEFAULT_OBJECT_TYPES[objtype]
            default_grants.add(DefaultGrant(for_role, schema, kind, grantee, privilege))
            if grantable:
                default_grants.add(DefaultGrant(for_role, schema, kind, grantee, privilege, True))
    if not conn.autocommit:
        conn.rollback()
    return Snapshot(
        database=database,
        database_owner=database_owner,
        current_user=current_user,
        is_superuser=bool(is_superuser),
        server_version=int(version),
        roles=roles,
        memberships=memberships,
        schemas=schemas,
        relations=relations,
        functions=functions,
        grants=frozenset(grants),
        default_grants=frozenset(default_grants),
        settings=settings,
        database_settings=database_settings,
    )


def guard_session(cur: psycopg2.extensions.cursor) -> None:
    """Resolve names in pg_catalog only, for this transaction (or the session, when the
    connection is in autocommit): a superuser session must not find a user's table,
    view, function or operator where it expects a catalog object."""
    local = not cur.connection.autocommit
    cur.execute("select pg_catalog.set_config('search_path', %s, %s)", (SAFE_SEARCH_PATH, local))
