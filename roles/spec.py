"""Read and validate the roles spec (``roles/roles.yml``).

The spec says who may touch each stage of the pipeline::

    pipeline_role: etl            # the role loaders and dbt work as
    schemas:                      # managed schemas, created if missing
      raw_*:   {owner: etl, stage: raw}     # a pattern: every raw_<source> that exists
      raw_app: {owner: etl, stage: raw}
      marts:   {owner: etl, stage: marts}
    roles:                        # group roles (NOLOGIN)
      etl:       {database: [connect, temp, create]}
      analyst:   {read: [raw_*, marts], database: [connect, temp], sandbox: true}
      dashboard: {read: [marts]}
    users:                        # login roles; passwords only from the environment
      tidewater_etl_runner: {member_of: [etl], password_env: TIDEWATER_ETL_PASSWORD}

A role may also say ``execute: [schemas]`` (EXECUTE on the functions there; reading
gives none), ``settings:`` (``ALTER ROLE … SET`` parameters from `ROLE_SETTINGS`)
and ``connection_limit:``; settings and limits of a role go to each of its users.
``known_roles:`` lists unmanaged roles that are expected on the server.

Validation happens in three passes, all problems reported at once: the structure
(JSON Schema: known keys, types, closed sets), the names (lowercase identifiers, no
quotes or semicolons, at most 63 bytes after the prefix), then the references
(every schema, role and owner named exists) and the pipeline's needs (the pipeline
role keeps what loaders and dbt need, so a spec cannot take it away).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import jsonschema
import yaml

from roles.exceptions import SpecError
from tidewater.paths import ROLES_SPEC

Stage = Literal["raw", "staging", "intermediate", "marts", "snapshots", "ops", "other"]
Level = Literal["read", "write"]
DatabasePrivilege = Literal["connect", "temp", "create"]

STAGES: tuple[str, ...] = get_args(Stage)
PIPELINE_STAGES = frozenset(STAGES) - {"other"}
DATABASE_PRIVILEGES: tuple[str, ...] = get_args(DatabasePrivilege)
PIPELINE_DATABASE_PRIVILEGES = frozenset(DATABASE_PRIVILEGES)

MAX_NAME_BYTES = 63
NAME_RULE = "lowercase letters, digits and _, starting with a letter or _"
NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
PATTERN_RE = re.compile(r"^[a-z_][a-z0-9_]*\*$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_ROLE_NAMES = frozenset(
    {"public", "none", "current_user", "current_role", "session_user", "user", "all"}
)
SANDBOX_PREFIX = "sandbox_"
DEFAULT_PIPELINE_ROLE = "etl"

_NAMES = {"type": "string", "description": "a schema name or pattern"}
_NAME_LIST = {"type": "array", "items": _NAMES, "description": "a list of schema names"}

# Per-login settings the spec may set with ``ALTER ROLE … SET``: limits that keep one
# session from hurting the others. A closed set, so a typo is an error, not a no-op.
ROLE_SETTINGS: tuple[str, ...] = (
    "statement_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "lock_timeout",
    "work_mem",
    "temp_file_limit",
    "default_transaction_read_only",
)
_SETTINGS = {
    "type": "object",
    "description": "a mapping of setting to value",
    "propertyNames": {"enum": list(ROLE_SETTINGS)},
    "additionalProperties": {
        "type": ["string", "integer", "boolean"],
        "description": "a value such as 60s, 5min or 64MB",
    },
}
_CONNECTION_LIMIT = {
    "type": "integer",
    "minimum": -1,
    "description": "a number of connections (-1: no limit)",
}

SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schemas", "roles"],
    "properties": {
        "version": {"enum": [1]},
        "database": {"type": "string", "description": "a database name"},
        "pipeline_role": {"type": "string", "description": "the name of a role under roles:"},
        "known_roles": {
            "type": "array",
            "description": "a list of role names or patterns",
            "items": {"type": "string", "description": "a role name or pattern"},
        },
        "schemas": {
            "type": "object",
            "description": "a mapping of schema name to {owner, stage}",
            "additionalProperties": {
                "type": "object",
                "description": "a mapping with owner and stage",
                "additionalProperties": False,
                "required": ["owner"],
                "properties": {
                    "owner": {"type": "string", "description": "a role name"},
                    "stage": {"enum": list(STAGES)},
                },
            },
        },
        "roles": {
            "type": "object",
            "description": "a mapping of role name to its privileges",
            "additionalProperties": {
                "type": ["object", "null"],
                "description": "a mapping with read, write, execute, database, sandbox",
                "additionalProperties": False,
                "properties": {
                    "read": _NAME_LIST,
                    "write": _NAME_LIST,
                    "execute": _NAME_LIST,
                    "settings": _SETTINGS,
                    "connection_limit": _CONNECTION_LIMIT,
                    "database": {
                        "type": "array",
                        "description": "a list of database privileges",
                        "items": {"enum": list(DATABASE_PRIVILEGES)},
                    },
                    "sandbox": {"type": "boolean", "description": "true or false"},
                },
            },
        },
        "users": {
            "type": ["object", "null"],
            "description": "a mapping of user name to {member_of, password_env}",
            "additionalProperties": {
                "type": "object",
                "description": "a mapping with member_of and password_env",
                "additionalProperties": False,
                "properties": {
                    "member_of": {
                        "type": "array",
                        "description": "a list of role names",
                        "items": {"type": "string", "description": "a role name"},
                    },
                    "password_env": {
                        "type": "string",
                        "description": "the name of an environment variable",
                    },
                    "settings": _SETTINGS,
                    "connection_limit": _CONNECTION_LIMIT,
                },
            },
        },
    },
}


@dataclass(frozen=True)
class SchemaSpec:
    """A managed schema, or a pattern (``raw_*``) for schemas that exist."""

    name: str
    owner: str
    stage: Stage = "other"

    @property
    def is_pattern(self) -> bool:
        return self.name.endswith("*")

    def matches(self, schema: str) -> bool:
        return schema_matches(self.name, schema)


@dataclass(frozen=True)
class RoleSpec:
    """A group role (NOLOGIN): what it may do in which schemas."""

    name: str
    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()
    database: tuple[DatabasePrivilege, ...] = ("connect",)
    sandbox: bool = False
    execute: tuple[str, ...] = ()  # schemas whose functions this role may execute
    settings: Mapping[str, str] = field(default_factory=dict)  # for each member user
    connection_limit: int | None = None  # for each member user

    def may_execute(self, schema: str) -> bool:
        return any(schema_matches(entry, schema) for entry in self.execute)

    def level(self, schema: str) -> Level | None:
        """The access this role has in a schema, from its own entries."""
        if any(schema_matches(entry, schema) for entry in self.write):
            return "write"
        if any(schema_matches(entry, schema) for entry in self.read):
            return "read"
        return None


@dataclass(frozen=True)
class UserSpec:
    """A login role: which groups it belongs to and where its password comes from."""

    name: str
    member_of: tuple[str, ...] = ()
    password_env: str | None = None
    settings: Mapping[str, str] = field(default_factory=dict)  # its own, over its groups'
    connection_limit: int | None = None


@dataclass(frozen=True)
class Spec:
    """The validated spec, with the prefix already applied to every role and user."""

    path: Path
    schemas: tuple[SchemaSpec, ...]
    roles: tuple[RoleSpec, ...]
    users: tuple[UserSpec, ...] = ()
    pipeline_role: str = DEFAULT_PIPELINE_ROLE
    database: str | None = None
    prefix: str = ""
    known_roles: tuple[str, ...] = ()  # unmanaged roles that may exist (names or patterns)

    def is_known(self, role: str) -> bool:
        """Whether an unmanaged role is expected (listed under ``known_roles:``)."""
        return any(schema_matches(entry, role) for entry in self.known_roles)

    def login_settings(self, name: str) -> dict[str, str]:
        """The ``ALTER ROLE … SET`` parameters a managed role should carry.

        PostgreSQL applies only the settings of the role that logs in, so a group
        role's ``settings:`` are given to each of its users (the user's own win) and
        the group role itself carries none.
        """
        if name not in self.user_names:
            return {}
        user = self.user(name)
        merged: dict[str, str] = {}
        for group in user.member_of:
            merged.update(self.role(group).settings)
        merged.update(user.settings)
        return merged

    def connection_limit(self, name: str) -> int:
        """The connection limit of a managed role; -1 (none) unless the spec sets one."""
        if name not in self.user_names:
            return -1
        user = self.user(name)
        if user.connection_limit is not None:
            return user.connection_limit
        limits = [
            self.role(group).connection_limit
            for group in user.member_of
            if self.role(group).connection_limit is not None
        ]
        return min(limits) if limits else -1  # type: ignore[type-var]

    @property
    def role_names(self) -> frozenset[str]:
        return frozenset(role.name for role in self.roles)

    @property
    def user_names(self) -> frozenset[str]:
        return frozenset(user.name for user in self.users)

    @property
    def managed_names(self) -> frozenset[str]:
        """Every role and user the spec manages."""
        return self.role_names | self.user_names

    def role(self, name: str) -> RoleSpec:
        return next(role for role in self.roles if role.name == name)

    def user(self, name: str) -> UserSpec:
        return next(user for user in self.users if user.name == name)

    def groups_of(self, name: str) -> tuple[str, ...]:
        """The group roles whose privileges ``name`` holds: itself (a role) or its groups."""
        if name in self.role_names:
            return (name,)
        if name in self.user_names:
            return self.user(name).member_of
        return ()

    def sandboxes(self) -> dict[str, str]:
        """Sandbox schema name -> owning user, for members of roles with ``sandbox: true``."""
        with_sandbox = {role.name for role in self.roles if role.sandbox}
        return {
            sandbox_name(user.name): user.name
            for user in sorted(self.users, key=lambda user: user.name)
            if with_sandbox.intersection(user.member_of)
        }

    def schema_for(self, schema: str) -> SchemaSpec | None:
        """The entry that manages a schema: its own name first, then the longest pattern."""
        sandboxes = self.sandboxes()
        if schema in sandboxes:
            return SchemaSpec(schema, sandboxes[schema], "other")
        exact = [entry for entry in self.schemas if entry.name == schema]
        if exact:
            return exact[0]
        patterns = [entry for entry in self.schemas if entry.is_pattern and entry.matches(schema)]
        return max(patterns, key=lambda entry: len(entry.name)) if patterns else None

    def declared_schemas(self) -> tuple[str, ...]:
        """Schemas that must exist: concrete names and sandboxes (patterns never create)."""
        names = {entry.name for entry in self.schemas if not entry.is_pattern}
        return tuple(sorted(names | set(self.sandboxes())))


def schema_matches(entry: str, schema: str) -> bool:
    """Whether a spec entry (a name or a ``prefix*`` pattern) covers a schema."""
    if entry.endswith("*"):
        return schema.startswith(entry[:-1])
    return entry == schema


def sandbox_name(user: str) -> str:
    return f"{SANDBOX_PREFIX}{user}"


def load_spec(path: str | os.PathLike[str] = ROLES_SPEC, *, prefix: str = "") -> Spec:
    """Read and validate a spec file.

    Args:
        path: the YAML file; defaults to the shipped ``roles/roles.yml``.
        prefix: prepended to every role and user name (not to schemas), so tests can
            run the shipped spec with names of their own.

    Raises:
        SpecError: every problem found, each naming the field and what is allowed.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(path, [f"cannot read the spec ({exc.strerror})"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise SpecError(path, [f"not valid YAML ({reason})"]) from exc
    return parse_spec(data, path=path, prefix=prefix)


def parse_spec(data: Any, *, path: str | os.PathLike[str] = "<spec>", prefix: str = "") -> Spec:
    """Validate an already-parsed spec (a mapping) and build a `Spec`."""
    path = Path(path)
    if prefix and not NAME_RE.match(prefix):
        raise SpecError(path, [f"prefix {prefix!r} is not allowed; use {NAME_RULE}"])
    if not isinstance(data, Mapping):
        raise SpecError(path, ["the spec must be a mapping with schemas: and roles:"])
    problems = _structure_problems(data)
    if problems:
        raise SpecError(path, problems)
    problems = _name_problems(data, prefix)
    if problems:
        raise SpecError(path, problems)
    spec = _build(data, path, prefix)
    problems = _reference_problems(spec, prefix) or _pipeline_problems(spec, prefix)
    if problems:
        raise SpecError(path, problems)
    return spec


def _where(parts: Sequence[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the spec"


def _structure_problems(data: Mapping[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(SPEC_SCHEMA)
    problems = []
    errors = sorted(validator.iter_errors(data), key=lambda error: list(map(str, error.path)))
    for error in errors:
        where = _where(list(error.absolute_path))
        schema = error.schema if isinstance(error.schema, dict) else {}
        if error.validator == "additionalProperties":
            allowed = sorted(schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(allowed)):
                problems.append(
                    f"{_where([*error.absolute_path, key])}: unknown key; "
                    f"allowed: {', '.join(allowed)}"
                )
        elif error.validator == "enum":
            allowed = ", ".join(map(str, schema["enum"]))
            problems.append(f"{where}: {error.instance!r} is not allowed; choose one of: {allowed}")
        elif error.validator == "required":
            missing = error.message.split("'")[1]
            problems.append(f"{_where([*error.absolute_path, missing])}: missing; add it")
        elif error.validator == "type":
            wanted = schema.get("description", error.validator_value)
            got = type(error.instance).__name__.replace("NoneType", "nothing")
            problems.append(f"{where}: expected {wanted}, got {got}")
        else:
            problems.append(f"{where}: {error.message}")
    return problems


def _name_problem(where: str, name: str, prefix: str, *, role: bool) -> str | None:
    if not NAME_RE.match(name):
        return f"{where}: {name!r} is not a valid name; use {NAME_RULE}"
    if role and name in RESERVED_ROLE_NAMES:
        return f"{where}: {name!r} is reserved in PostgreSQL; choose another name"
    if name.startswith("pg_"):
        return f"{where}: {name!r} starts with pg_, which PostgreSQL reserves; rename it"
    if len((prefix + name if role else name).encode()) > MAX_NAME_BYTES:
        return f"{where}: {prefix + name if role else name!r} is longer than 63 bytes; shorten it"
    return None


def _name_problems(data: Mapping[str, Any], prefix: str) -> list[str]:
    problems: list[str] = []
    for name in data["schemas"]:
        if "*" in str(name):
            if not PATTERN_RE.match(str(name)):
                problems.append(
                    f"schemas: pattern {name!r} is not allowed; a pattern is a name prefix "
                    f"followed by one *, e.g. raw_*"
                )
        elif name == "information_schema":
            problems.append("schemas: information_schema is a system schema; remove it")
        elif problem := _name_problem("schemas", str(name), prefix, role=False):
            problems.append(problem)
    for section in ("roles", "users"):
        for name in data.get(section) or {}:
            if problem := _name_problem(section, str(name), prefix, role=True):
                problems.append(problem)
    for name, user in (data.get("users") or {}).items():
        env = user.get("password_env")
        if env is not None and not ENV_RE.match(env):
            problems.append(
                f"users.{name}.password_env: {env!r} is not an environment variable name; "
                "use letters, digits and _"
            )
    return problems


def _build(data: Mapping[str, Any], path: Path, prefix: str) -> Spec:
    def named(name: str) -> str:
        return prefix + name

    schemas = tuple(
        SchemaSpec(str(name), named(str(entry["owner"])), entry.get("stage", "other"))
        for name, entry in sorted(data["schemas"].items())
    )
    roles = tuple(
        RoleSpec(
            name=named(str(name)),
            read=tuple((entry or {}).get("read") or ()),
            write=tuple((entry or {}).get("write") or ()),
            database=tuple((entry or {}).get("database", ["connect"])),
            sandbox=bool((entry or {}).get("sandbox", False)),
            execute=tuple((entry or {}).get("execute") or ()),
            settings=_settings((entry or {}).get("settings")),
            connection_limit=(entry or {}).get("connection_limit"),
        )
        for name, entry in sorted(data["roles"].items())
    )
    users = tuple(
        UserSpec(
            name=named(str(name)),
            member_of=tuple(sorted(named(str(role)) for role in entry.get("member_of") or ())),
            password_env=entry.get("password_env"),
            settings=_settings(entry.get("settings")),
            connection_limit=entry.get("connection_limit"),
        )
        for name, entry in sorted((data.get("users") or {}).items())
    )
    return Spec(
        path=path,
        schemas=schemas,
        roles=roles,
        users=users,
        pipeline_role=named(str(data.get("pipeline_role", DEFAULT_PIPELINE_ROLE))),
        database=data.get("database"),
        prefix=prefix,
        known_roles=tuple(data.get("known_roles") or ()),
    )


def setting_text(value: Any) -> str:
    """A setting as PostgreSQL stores it in pg_db_role_setting (YAML true is ``on``)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _settings(entry: Mapping[str, Any] | None) -> dict[str, str]:
    return {key: setting_text(value) for key, value in sorted((entry or {}).items())}


def _known_schema(spec: Spec, entry: str) -> bool:
    keys = [schema.name for schema in spec.schemas]
    if entry in keys:
        return True
    if entry.endswith("*"):
        return any(schema_matches(entry, key) for key in keys if not key.endswith("*"))
    return any(schema.is_pattern and schema.matches(entry) for schema in spec.schemas)


def _reference_problems(spec: Spec, prefix: str) -> list[str]:
    def bare(name: str) -> str:
        return name[len(prefix) :]

    problems: list[str] = []
    role_names = sorted(bare(name) for name in spec.role_names)
    roles_hint = ", ".join(role_names)
    schema_hint = ", ".join(schema.name for schema in spec.schemas)
    for name in sorted(spec.role_names & spec.user_names):
        problems.append(f"users.{bare(name)}: {bare(name)!r} is also under roles:; rename one")
    for schema in spec.schemas:
        if schema.owner not in spec.role_names:
            problems.append(
                f"schemas.{schema.name}.owner: unknown role {bare(schema.owner)!r}; "
                f"choose one of: {roles_hint}"
            )
    for role in spec.roles:
        for level in ("read", "write"):
            for index, entry in enumerate(getattr(role, level)):
                if not (NAME_RE.match(entry) or PATTERN_RE.match(entry)):
                    problems.append(
                        f"roles.{bare(role.name)}.{level}[{index}]: {entry!r} is not a schema "
                        f"name or pattern; use {NAME_RULE}, optionally ending in *"
                    )
                elif not _known_schema(spec, entry):
                    problems.append(
                        f"roles.{bare(role.name)}.{level}[{index}]: unknown schema {entry!r}; "
                        f"declare it under schemas: or choose one of: {schema_hint}"
                    )
        for index, entry in enumerate(role.execute):
            covered = [*role.read, *role.write]
            if not any(schema_matches(other, entry) or other == entry for other in covered):
                problems.append(
                    f"roles.{bare(role.name)}.execute[{index}]: {entry!r} is not under its read "
                    "or write; executing a function needs the schema, so add it there too"
                )
        for entry in sorted(set(role.read) & set(role.write)):
            problems.append(
                f"roles.{bare(role.name)}: {entry!r} is under both read and write; "
                "keep it under one (write includes read)"
            )
    for user in spec.users:
        for index, group in enumerate(user.member_of):
            if group not in spec.role_names:
                problems.append(
                    f"users.{bare(user.name)}.member_of[{index}]: unknown role {bare(group)!r}; "
                    f"choose one of: {roles_hint}"
                )
        groups = [spec.role(group) for group in user.member_of if group in spec.role_names]
        for setting in ROLE_SETTINGS:
            values = {group.settings[setting] for group in groups if setting in group.settings}
            if len(values) > 1 and setting not in user.settings:
                problems.append(
                    f"users.{bare(user.name)}: its roles set {setting} to "
                    f"{', '.join(sorted(values))}; set it under users.{bare(user.name)}.settings"
                )
    for index, entry in enumerate(spec.known_roles):
        if not (NAME_RE.match(entry) or PATTERN_RE.match(entry)):
            problems.append(
                f"known_roles[{index}]: {entry!r} is not a role name or pattern; use {NAME_RULE}, "
                "optionally ending in *"
            )
    for schema, owner in spec.sandboxes().items():
        if len(schema.encode()) > MAX_NAME_BYTES:
            problems.append(f"users.{bare(owner)}: sandbox schema {schema!r} is too long")
        if any(entry.name == schema for entry in spec.schemas):
            problems.append(
                f"schemas.{schema}: this is the sandbox of user {bare(owner)}; remove it"
            )
    return problems


def _pipeline_problems(spec: Spec, prefix: str) -> list[str]:
    """What loaders and dbt need, so that no spec can take it away from them."""
    name = spec.pipeline_role
    bare = name[len(prefix) :]
    if name not in spec.role_names:
        return [
            f"pipeline_role: unknown role {bare!r}; choose the role loaders and dbt work as "
            f"from: {', '.join(sorted(role[len(prefix) :] for role in spec.role_names))}"
        ]
    role = spec.role(name)
    problems: list[str] = []
    for schema in spec.schemas:
        if schema.stage not in PIPELINE_STAGES:
            continue
        if schema.owner != name and role.level(schema.name) != "write":
            problems.append(
                f"schemas.{schema.name}: the pipeline role {bare!r} could not load it "
                f"(stage {schema.stage}); set owner: {bare} or add {schema.name} under "
                f"roles.{bare}.write"
            )
    missing = sorted(PIPELINE_DATABASE_PRIVILEGES - set(role.database))
    if missing:
        problems.append(
            f"roles.{bare}.database: the pipeline role needs {', '.join(missing)} "
            "(dbt creates schemas and temporary tables); use [connect, temp, create]"
        )
    return problems
