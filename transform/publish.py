"""Publishing the marts: the write-audit-publish gate in front of dashboards.

On production targets dbt builds and tests the marts in a shadow schema
(``marts_build``, see ``dbt_project/macros/generate_schema_name.sql``). Only when
``dbt build`` succeeded does :func:`publish` move the marts it built into
``marts``, all in one PostgreSQL transaction: each built table trades places
with the published one of the same name, so a dashboard sees either every old
table or every new one, never a mart whose tests failed.

The previous tables go back to ``marts_build``, where the next incremental build
catches them up from their own ``_loaded_at`` (incremental models only ever
depend on what a table holds, so a copy one run behind is just a larger
increment). Privileges follow the *name*: a table moved into ``marts`` gets
what the default privileges of ``marts`` give (the dashboard's SELECT) and
loses what only ``marts_build`` gives, and the other way round, so the roles
tool sees the same grants before and after.

Redshift has no ``ALTER TABLE ... SET SCHEMA``; there the two schemas trade
names instead (:func:`redshift_swap_statements`), which publishes only a
complete build.

Publishing is not hostage to readers. The swap needs an ACCESS EXCLUSIVE lock on
every table it moves, and while it waits for one, every new dashboard query on
that table queues behind it. So each attempt takes all the locks first, in one
``LOCK TABLE``, waiting at most ``attempt_lock_timeout_s`` (default 2 s) — the
longest a dashboard query queues behind publish — then rolls back, backs off and
tries again until ``lock_timeout_s`` (the whole budget) is spent. Giving up names
the sessions holding the tables (user, application, since when). The roles spec
gives dashboard and analyst logins an ``idle_in_transaction_session_timeout``,
so a forgotten open transaction ends well within the budget.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from tidewater.db import ConnectFn
from transform.exceptions import PublishFailed

# aclitem letters (https://www.postgresql.org/docs/current/ddl-priv.html) and the
# privilege each one grants.
PRIVILEGES = {
    "r": "SELECT",
    "a": "INSERT",
    "w": "UPDATE",
    "d": "DELETE",
    "D": "TRUNCATE",
    "x": "REFERENCES",
    "t": "TRIGGER",
    "m": "MAINTAIN",
    "U": "USAGE",
    "C": "CREATE",
    "X": "EXECUTE",
}
# pg_default_acl.defaclobjtype and the object class it covers.
DEFAULT_OBJECT_TYPES = {"r": "tables", "f": "functions", "S": "sequences"}
ACL_ITEM = re.compile(r'^(?P<group>group )?(?P<grantee>"(?:[^"]|"")*"|[^=]*)=(?P<letters>[^/]*)/')
TEMPORARY_NAME = "tw_publish_{}"
FAILED_STATUSES = {"error", "fail", "runtime error", "skipped"}


@dataclass(frozen=True, order=True)
class Grant:
    """One privilege one grantee holds; grantee '' is PUBLIC."""

    grantee: str
    privilege: str
    group: bool = False  # a Redshift group

    def grantee_sql(self) -> sql.Composable:
        if not self.grantee:
            return sql.SQL("PUBLIC")
        name = sql.Identifier(self.grantee)
        return sql.SQL("GROUP {}").format(name) if self.group else name


def parse_acl(items: Iterable[str] | None) -> frozenset[Grant]:
    """The grants in aclitem texts (``analyst=r/etl``, ``"group bi=r/etl"``)."""
    grants: set[Grant] = set()
    for item in items or ():
        match = ACL_ITEM.match(item)
        if not match:
            raise ValueError(f"not an aclitem: {item!r}")
        grantee = _unquote(match["grantee"])
        for letter in match["letters"].replace("*", ""):
            if letter in PRIVILEGES:
                grants.add(Grant(grantee, PRIVILEGES[letter], bool(match["group"])))
    return frozenset(grants)


@dataclass(frozen=True)
class SchemaPrivileges:
    """What a schema grants: on itself, and by default on the tables made in it."""

    on_schema: frozenset[Grant]
    on_new_tables: frozenset[Grant]  # union over the roles with default privileges
    defaults: frozenset[tuple[str, str, Grant]] = frozenset()  # (creator, objtype, grant)


ARRAY_ELEMENT = re.compile(r'"((?:[^"\\]|\\.)*)"|([^,{}]+)')


def acl_items(value: str | Sequence[str] | None) -> list[str]:
    """The elements of an aclitem array, however the driver returned it."""
    if value is None:
        return []
    if not isinstance(value, str):
        return list(value)
    return [
        re.sub(r"\\(.)", r"\1", quoted) if quoted else bare
        for quoted, bare in ARRAY_ELEMENT.findall(value)
    ]


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


# Redshift names the creator column `defacluser` and has no regrole.
DEFAULT_ACLS = {
    "postgres": "select defaclrole::regrole::text, defaclobjtype::text, defaclacl "
    "from pg_default_acl as acl inner join pg_namespace as ns "
    "on acl.defaclnamespace = ns.oid where ns.nspname = %s",
    "redshift": "select users.usename, acl.defaclobjtype, acl.defaclacl "
    "from pg_default_acl as acl inner join pg_namespace as ns "
    "on acl.defaclnamespace = ns.oid inner join pg_user as users "
    "on acl.defacluser = users.usesysid where ns.nspname = %s",
}


def read_schema_privileges(
    cur: psycopg2.extensions.cursor, schema: str, dialect: str = "postgres"
) -> SchemaPrivileges:
    cur.execute("select nspacl from pg_namespace where nspname = %s", (schema,))
    row = cur.fetchone()
    on_schema = parse_acl(acl_items(row[0] if row else None))
    cur.execute(DEFAULT_ACLS[dialect], (schema,))
    defaults: set[tuple[str, str, Grant]] = set()
    for role, objtype, acl in cur.fetchall():
        defaults.update((_unquote(role), objtype, grant) for grant in parse_acl(acl_items(acl)))
    on_new_tables = frozenset(grant for _, objtype, grant in defaults if objtype == "r")
    return SchemaPrivileges(on_schema, on_new_tables, frozenset(defaults))


def table_grant_moves(
    relation: sql.Composable, into: SchemaPrivileges, out_of: SchemaPrivileges
) -> list[sql.Composed]:
    """GRANT what `into` gives new tables and `out_of` did not; REVOKE the reverse."""
    statements = []
    for grant in sorted(into.on_new_tables - out_of.on_new_tables):
        statements.append(
            sql.SQL("grant {} on {} to {}").format(
                sql.SQL(grant.privilege), relation, grant.grantee_sql()
            )
        )
    for grant in sorted(out_of.on_new_tables - into.on_new_tables):
        statements.append(
            sql.SQL("revoke {} on {} from {}").format(
                sql.SQL(grant.privilege), relation, grant.grantee_sql()
            )
        )
    return statements


def postgres_publish_statements(
    live: str,
    build: str,
    tables: Sequence[str],
    existing_live: set[str],
    live_privileges: SchemaPrivileges,
    build_privileges: SchemaPrivileges,
) -> list[sql.Composed]:
    """Statements that swap each built table with its published namesake."""
    statements: list[sql.Composed] = []
    for number, table in enumerate(tables):
        parked = TEMPORARY_NAME.format(number)
        if table in existing_live:
            statements += [
                sql.SQL("alter table {} rename to {}").format(
                    sql.Identifier(live, table), sql.Identifier(parked)
                ),
                sql.SQL("alter table {} set schema {}").format(
                    sql.Identifier(build, table), sql.Identifier(live)
                ),
                sql.SQL("alter table {} set schema {}").format(
                    sql.Identifier(live, parked), sql.Identifier(build)
                ),
                sql.SQL("alter table {} rename to {}").format(
                    sql.Identifier(build, parked), sql.Identifier(table)
                ),
            ]
            statements += table_grant_moves(
                sql.Identifier(build, table), build_privileges, live_privileges
            )
        else:
            statements.append(
                sql.SQL("alter table {} set schema {}").format(
                    sql.Identifier(build, table), sql.Identifier(live)
                )
            )
        statements += table_grant_moves(
            sql.Identifier(live, table), live_privileges, build_privileges
        )
    return statements


def redshift_swap_statements(
    live: str,
    build: str,
    live_privileges: SchemaPrivileges,
    build_privileges: SchemaPrivileges,
) -> list[sql.Composed]:
    """Redshift: the schemas trade names, then privileges move back to the names.

    Run in one transaction. Only a complete build may be published this way
    (every table of the live schema is replaced).
    """
    parked = f"{live}__{TEMPORARY_NAME.format('swap')}"
    statements = [
        sql.SQL("alter schema {} rename to {}").format(
            sql.Identifier(live), sql.Identifier(parked)
        ),
        sql.SQL("alter schema {} rename to {}").format(sql.Identifier(build), sql.Identifier(live)),
        sql.SQL("alter schema {} rename to {}").format(
            sql.Identifier(parked), sql.Identifier(build)
        ),
    ]
    for schema, wanted, had in (
        (live, live_privileges, build_privileges),
        (build, build_privileges, live_privileges),
    ):
        name = sql.Identifier(schema)
        for verb, grants, word in (
            ("grant", wanted.on_schema - had.on_schema, "to"),
            ("revoke", had.on_schema - wanted.on_schema, "from"),
        ):
            for grant in sorted(grants):
                statements.append(
                    sql.SQL("{} {} on schema {} {} {}").format(
                        sql.SQL(verb),
                        sql.SQL(grant.privilege),
                        name,
                        sql.SQL(word),
                        grant.grantee_sql(),
                    )
                )
        for verb, defaults, word in (
            ("grant", wanted.defaults - had.defaults, "to"),
            ("revoke", had.defaults - wanted.defaults, "from"),
        ):
            for creator, objtype, grant in sorted(defaults):
                if objtype not in DEFAULT_OBJECT_TYPES:
                    continue
                statements.append(
                    sql.SQL(
                        "alter default privileges for user {} in schema {} {} {} on {} {} {}"
                    ).format(
                        sql.Identifier(creator),
                        name,
                        sql.SQL(verb),
                        sql.SQL(grant.privilege),
                        sql.SQL(DEFAULT_OBJECT_TYPES[objtype]),
                        sql.SQL(word),
                        grant.grantee_sql(),
                    )
                )
        all_tables = sql.SQL("all tables in schema {}").format(name)
        statements += table_grant_moves(all_tables, wanted, had)
    return statements


@dataclass
class BuildOutcome:
    """What one ``dbt build`` did to the shadow schema, read from dbt's artifacts."""

    live: str = ""
    build: str = ""
    built: list[str] = field(default_factory=list)  # relations built without error
    expected: list[str] = field(default_factory=list)  # every enabled mart
    failed: list[str] = field(default_factory=list)  # node ids that failed or were skipped

    @property
    def publishable(self) -> bool:
        return bool(self.live and self.built) and not self.failed

    @property
    def complete(self) -> bool:
        return set(self.built) == set(self.expected)


def read_build_outcome(
    manifest: dict[str, Any] | None, run_results: dict[str, Any] | None, live: str = "marts"
) -> BuildOutcome:
    """The marts a dbt run built into a shadow schema, and any failure (from its artifacts)."""
    if not manifest or not run_results:
        return BuildOutcome()
    nodes = manifest["nodes"]
    results = run_results.get("results", [])
    outcome = BuildOutcome()
    shadowed = {
        node_id: node
        for node_id, node in nodes.items()
        if node.get("resource_type") == "model"
        and node["config"].get("enabled", True)
        and node["config"].get("schema") == live
        and node["schema"] != live  # a target that builds in place has nothing to publish
    }
    for node in shadowed.values():
        if outcome.build and node["schema"] != outcome.build:
            raise PublishFailed(live, node["schema"], f"marts are built into {outcome.build} too")
        outcome.live, outcome.build = live, node["schema"]
        outcome.expected.append(node["alias"])
    for result in results:
        if result.get("status") in FAILED_STATUSES:
            outcome.failed.append(result["unique_id"])
        elif result["unique_id"] in shadowed:
            outcome.built.append(shadowed[result["unique_id"]]["alias"])
    outcome.built.sort()
    outcome.expected.sort()
    return outcome


def _relations(cur: psycopg2.extensions.cursor, schema: str, names: Sequence[str]) -> set[str]:
    cur.execute(
        "select c.relname from pg_class as c "
        "inner join pg_namespace as n on c.relnamespace = n.oid "
        "where n.nspname = %s and c.relname in %s",  # no arrays: Redshift has none
        (schema, tuple(names) or ("",)),
    )
    return {name for (name,) in cur.fetchall()}


def publish_statements(
    cur: psycopg2.extensions.cursor, outcome: BuildOutcome, dialect: str
) -> list[sql.Composed]:
    """What publishing this build takes, read from the catalog inside the transaction."""
    missing = sorted(set(outcome.built) - _relations(cur, outcome.build, outcome.built))
    if missing:
        raise PublishFailed(outcome.live, outcome.build, f"{', '.join(missing)} not in the build")
    live = read_schema_privileges(cur, outcome.live, dialect)
    build = read_schema_privileges(cur, outcome.build, dialect)
    if dialect == "redshift":
        if not outcome.complete:
            raise PublishFailed(
                outcome.live,
                outcome.build,
                "on Redshift only a complete build is published (whole schemas trade "
                f"names) and this one left out {', '.join(sorted(set(outcome.expected) - set(outcome.built)))}",
            )
        return redshift_swap_statements(outcome.live, outcome.build, live, build)
    existing = _relations(cur, outcome.live, outcome.built)
    return postgres_publish_statements(
        outcome.live, outcome.build, outcome.built, existing, live, build
    )


# Sessions holding a lock on any of the tables publish must lock (pg_locks is
# readable by every role; the start of another user's transaction is shown only to
# pg_read_all_stats members, so it may be null).
LOCK_HOLDERS_QUERY = """
select distinct a.pid, a.usename, a.application_name, a.state, a.xact_start, l.mode,
    n.nspname || '.' || c.relname
from pg_locks as l
inner join pg_stat_activity as a on a.pid = l.pid
inner join pg_class as c on c.oid = l.relation
inner join pg_namespace as n on n.oid = c.relnamespace
where l.granted and l.locktype = 'relation' and l.pid <> pg_backend_pid()
    and (n.nspname, c.relname) in %s
order by 1
"""
RETRIED_SQLSTATES = frozenset({"55P03", "40P01"})  # lock_not_available, deadlock_detected


@dataclass(frozen=True)
class LockHolder:
    """A session holding a lock on a table publish needs."""

    pid: int
    user: str | None
    application: str | None
    state: str | None
    since: datetime | None  # its transaction's start, when this role may see it
    mode: str
    relation: str

    def describe(self, first_seen: datetime | None = None) -> str:
        if self.since is not None:
            since = f"in a transaction since {self.since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        elif first_seen is not None:
            since = f"holding it since at least {first_seen.astimezone(UTC):%H:%M:%S} UTC"
        else:
            since = "since an unknown time"
        state = f", {self.state}" if self.state else ""
        return (
            f"{self.relation} is held ({self.mode}) by user {self.user or '?'} "
            f"(application {self.application or '-'!r}, pid {self.pid}{state}) {since}"
        )


def _lock_targets(outcome: BuildOutcome) -> list[tuple[str, str]]:
    return sorted(
        {(schema, table) for table in outcome.built for schema in (outcome.live, outcome.build)}
    )


def lock_holders(cur: psycopg2.extensions.cursor, outcome: BuildOutcome) -> list[LockHolder]:
    """Who holds locks on the tables a publish of ``outcome`` must lock."""
    cur.execute(LOCK_HOLDERS_QUERY, (tuple(_lock_targets(outcome)),))
    return [LockHolder(*row) for row in cur.fetchall()]


def _lock_statement(cur: psycopg2.extensions.cursor, outcome: BuildOutcome) -> sql.Composed | None:
    """One LOCK TABLE for every existing table the swap touches, in a stable order."""
    existing = [
        (schema, table)
        for schema in (outcome.build, outcome.live)
        for table in sorted(_relations(cur, schema, outcome.built))
    ]
    if not existing:
        return None
    names = sql.SQL(", ").join(sql.Identifier(schema, table) for schema, table in sorted(existing))
    return sql.SQL("lock table {} in access exclusive mode").format(names)


def publish(
    connect: ConnectFn,
    outcome: BuildOutcome,
    *,
    dialect: str = "postgres",
    lock_timeout_s: float = 300,
    attempt_lock_timeout_s: float = 2,
    backoff_s: float = 0.5,
    max_backoff_s: float = 15,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Move the tables of a green build from the shadow schema into the live one.

    One transaction per attempt: it commits completely or not at all. On
    PostgreSQL each attempt waits at most ``attempt_lock_timeout_s`` for its locks
    (so dashboard queries queue behind it no longer than that), then backs off
    (doubling from ``backoff_s`` up to ``max_backoff_s``) and tries again, until
    ``lock_timeout_s`` in all. Returns the tables published.

    Raises:
        PublishFailed: a statement failed, or the locks could not be had in time;
            the message names the sessions holding them.
    """
    if not outcome.publishable:
        return []
    deadline = time.monotonic() + lock_timeout_s
    delay = backoff_s
    attempts = 0
    first_seen: dict[int, datetime] = {}
    while True:
        attempts += 1
        remaining = deadline - time.monotonic()
        wait_s = max(0.05, min(attempt_lock_timeout_s, remaining))
        conn = connect()
        try:
            try:
                _publish_once(conn, outcome, dialect, wait_s)
                return list(outcome.built)
            except psycopg2.Error as error:
                conn.rollback()
                if dialect != "postgres" or error.pgcode not in RETRIED_SQLSTATES:
                    reason = str(error).strip().splitlines()[0]
                    raise PublishFailed(outcome.live, outcome.build, reason) from error
                with conn.cursor() as cur:
                    holders = lock_holders(cur, outcome)
                conn.rollback()
        finally:
            conn.close()
        now = datetime.now(UTC)
        for holder in holders:
            first_seen.setdefault(holder.pid, now)
        if time.monotonic() + min(delay, max_backoff_s) >= deadline:
            who = "; ".join(holder.describe(first_seen.get(holder.pid)) for holder in holders)
            raise PublishFailed(
                outcome.live,
                outcome.build,
                f"gave up waiting for table locks after {lock_timeout_s:g}s and {attempts} "
                f"attempts: {who or 'the holder left just now'}; end that session or give its "
                "role an idle_in_transaction_session_timeout in roles/roles.yml",
            )
        sleep(min(delay, max_backoff_s, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, max_backoff_s)


def _publish_once(
    conn: psycopg2.extensions.connection, outcome: BuildOutcome, dialect: str, wait_s: float
) -> None:
    with conn, conn.cursor() as cur:
        if dialect == "postgres":
            cur.execute("select set_config('lock_timeout', %s, true)", (f"{int(wait_s * 1000)}ms",))
        cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(outcome.live)))
        if dialect == "postgres":
            lock = _lock_statement(cur, outcome)
            if lock is not None:
                cur.execute(lock)
        for statement in publish_statements(cur, outcome, dialect):
            cur.execute(statement)
