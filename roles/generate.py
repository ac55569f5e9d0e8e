"""Bootstrap: write a spec from an existing database.

Reads the catalog once and guesses the spec that describes it: every non-system
schema (except ``public``) with its owner, group roles (NOLOGIN, not superuser)
with ``read`` or ``write`` per schema and their database privileges, and login roles
as users of those groups. The result is a starting point to review: problems the
validator finds are listed at the top of the file.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

import psycopg2.extensions
import yaml

from roles.exceptions import SpecError
from roles.inspect import PUBLIC, Snapshot, inspect
from roles.spec import DEFAULT_PIPELINE_ROLE, NAME_RE, parse_spec, sandbox_name

WRITE_PRIVILEGES = frozenset({"CREATE", "INSERT", "UPDATE", "DELETE", "TRUNCATE"})
DATABASE_NAMES = {"CONNECT": "connect", "TEMPORARY": "temp", "CREATE": "create"}
STAGE_NAMES = {"staging", "intermediate", "marts", "snapshots", "ops"}


def _stage(schema: str) -> str:
    if schema.startswith("raw_"):
        return "raw"
    return schema if schema in STAGE_NAMES else "other"


def spec_from_snapshot(snapshot: Snapshot) -> dict[str, Any]:
    """The spec (as a mapping, ready for YAML) that describes a snapshot."""
    superusers = snapshot.superusers
    sandboxed = {
        owner
        for name, owner in snapshot.schemas.items()
        if name == sandbox_name(owner) and owner in snapshot.roles and snapshot.roles[owner].login
    }
    schemas = {
        name: owner
        for name, owner in sorted(snapshot.schemas.items())
        if name != "public" and not name.startswith("pg_") and owner not in sandboxed
    }
    groups = {
        name
        for name, role in snapshot.roles.items()
        if not role.login and not role.superuser and not name.startswith("pg_")
    }
    levels: dict[str, dict[str, str]] = defaultdict(dict)
    executes: dict[str, set[str]] = defaultdict(set)
    for grant in snapshot.grants:
        if grant.schema not in schemas or grant.grantee not in groups:
            continue
        if grant.kind == "function":
            executes[grant.grantee].add(grant.schema)  # kept below if it only reads there
            continue
        level = "write" if grant.privilege in WRITE_PRIVILEGES else "read"
        if levels[grant.grantee].get(grant.schema) != "write":
            levels[grant.grantee][grant.schema] = level
    database: dict[str, set[str]] = defaultdict(set)
    for grant in snapshot.grants:
        if (
            grant.kind == "database"
            and grant.grantee in groups | {PUBLIC}
            and grant.privilege in DATABASE_NAMES
        ):
            database[grant.grantee].add(DATABASE_NAMES[grant.privilege])
    owners = {owner for owner in schemas.values() if owner in groups}
    used = owners | set(levels) | (set(database) - {PUBLIC})
    roles: dict[str, Any] = {}
    for name in sorted(used):
        entry: dict[str, Any] = {}
        for level in ("read", "write"):
            listed = sorted(
                schema
                for schema, found in levels[name].items()
                if found == level and schemas[schema] != name
            )
            if listed:
                entry[level] = listed
        executed = sorted(schema for schema in executes[name] if levels[name].get(schema) == "read")
        if executed:
            entry["execute"] = executed
        privileges = database[name] | database.get(PUBLIC, set())
        entry["database"] = [p for p in ("connect", "temp", "create") if p in privileges]
        if any(
            membership.role == name and membership.member in sandboxed
            for membership in snapshot.memberships
        ):
            entry["sandbox"] = True
        roles[name] = entry
    users: dict[str, Any] = {}
    for membership in sorted(snapshot.memberships):
        member = snapshot.roles.get(membership.member)
        if membership.role in roles and member and member.login and not member.superuser:
            users.setdefault(membership.member, {"member_of": []})["member_of"].append(
                membership.role
            )
    for name, entry in users.items():
        entry["password_env"] = f"{name.upper()}_PASSWORD"
        if snapshot.settings.get(name):
            entry["settings"] = dict(sorted(snapshot.settings[name].items()))
        if snapshot.roles[name].connection_limit != -1:
            entry["connection_limit"] = snapshot.roles[name].connection_limit
    pipeline = Counter(
        owner for schema, owner in schemas.items() if _stage(schema) != "other" and owner in roles
    )
    spec: dict[str, Any] = {"version": 1}
    if pipeline:
        spec["pipeline_role"] = pipeline.most_common(1)[0][0]
    elif DEFAULT_PIPELINE_ROLE not in roles and roles:
        spec["pipeline_role"] = sorted(roles)[0]
    groups_of: dict[str, list[str]] = defaultdict(list)
    for membership in snapshot.memberships:
        if membership.role in roles:
            groups_of[membership.member].append(membership.role)

    def owner_role(owner: str) -> str:
        """A schema owned by a user is given to its only group, if it has one."""
        if owner in roles:
            return owner
        if owner not in superusers and len(groups_of.get(owner, [])) == 1:
            return groups_of[owner][0]
        return owner

    spec["schemas"] = {
        name: {"owner": owner_role(owner), "stage": _stage(name)} for name, owner in schemas.items()
    }
    spec["roles"] = roles
    if users:
        spec["users"] = users
    return spec


def _flow(value: Any) -> str:
    if isinstance(value, str):
        return value if NAME_RE.match(value) else json.dumps(value)
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip()


def render_spec_yaml(spec: dict[str, Any], *, source: str) -> str:
    """The spec as YAML in the shape of the shipped ``roles.yml``, problems on top."""
    lines = [
        f"# Generated by `invoke roles --generate` from {source}.",
        "# Review it before applying: apply revokes whatever it does not grant.",
    ]
    try:
        parse_spec(spec)
    except SpecError as exc:
        lines.append("# Problems to fix first:")
        lines.extend(f"#   - {problem}" for problem in exc.problems)
    lines.append(f"version: {spec['version']}")
    if "pipeline_role" in spec:
        lines.append(f"pipeline_role: {_flow(spec['pipeline_role'])}")
    for section in ("schemas", "roles", "users"):
        if section not in spec:
            continue
        lines.append("")
        lines.append(f"{section}:")
        for name, entry in spec[section].items():
            lines.append(f"  {_flow(name)}: {_flow(entry)}")
    return "\n".join(lines) + "\n"


def generate_spec(conn: psycopg2.extensions.connection) -> str:
    """Read the connected database and return a spec for it, as YAML text."""
    snapshot = inspect(conn)
    return render_spec_yaml(spec_from_snapshot(snapshot), source=f"database {snapshot.database}")
