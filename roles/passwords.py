"""Passwords: read from the environment, compared against the stored verifier, sent as
a SCRAM verifier (never in clear), and never printed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from roles.spec import Spec

SCRAM_ITERATIONS = 4096
REDACTED = "'***'"


class Secret:
    """A password that does not show itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class DesiredPassword:
    """Where a user's password comes from; ``secret`` is None when there is none."""

    user: str
    secret: Secret | None
    origin: str  # "$NAME", "the dbt profile", or why there is none


def resolve_passwords(
    spec: Spec,
    *,
    env: Mapping[str, str] | None = None,
    fallback: Mapping[str, str] | None = None,
) -> dict[str, DesiredPassword]:
    """Each user's password: its ``password_env`` if set, else ``fallback[user]`` (the CLI
    passes the password the dbt profile uses for its user), else none."""
    env = os.environ if env is None else env
    fallback = fallback or {}
    resolved = {}
    for user in spec.users:
        if user.password_env and env.get(user.password_env):
            desired = DesiredPassword(user.name, Secret(env[user.password_env]), user.password_env)
        elif fallback.get(user.name):
            desired = DesiredPassword(user.name, Secret(fallback[user.name]), "the dbt profile")
        elif user.password_env:
            desired = DesiredPassword(user.name, None, f"{user.password_env} is unset")
        else:
            desired = DesiredPassword(user.name, None, "no password_env")
        resolved[user.name] = desired
    return resolved


def password_matches(stored: str | None, password: str, user: str) -> bool:
    """Whether ``password`` is the one behind a ``pg_authid.rolpassword`` value."""
    if not stored:
        return False
    if stored.startswith("SCRAM-SHA-256$"):
        try:
            head, keys = stored[len("SCRAM-SHA-256$") :].split("$")
            iterations, salt = head.split(":")
            stored_key, server_key = keys.split(":")
            salt_bytes = base64.b64decode(salt)
        except ValueError:
            return False
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt_bytes, int(iterations))
        client_key = hmac.new(salted, b"Client Key", "sha256").digest()
        expected_stored = base64.b64encode(hashlib.sha256(client_key).digest()).decode()
        expected_server = base64.b64encode(
            hmac.new(salted, b"Server Key", "sha256").digest()
        ).decode()
        return hmac.compare_digest(expected_stored, stored_key) and hmac.compare_digest(
            expected_server, server_key
        )
    if stored.startswith("md5") and len(stored) == 35:
        return hmac.compare_digest(stored, md5_verifier(password, user))
    return hmac.compare_digest(stored, password)


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores, so the clear text never reaches
    the server (or its statement log)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def md5_verifier(password: str, user: str) -> str:
    """The md5 form (``md5`` + md5(password + user)), which Redshift accepts."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()
