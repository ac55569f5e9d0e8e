"""Roles: least-privilege grants as code, in the pgbedrock manner.

spec → inspect → diff → plan → apply: read the spec and validate it
(`load_spec`); read the catalog once (`roles.inspect`); compute the difference as
sorted sets (`roles.diff`); render SQL grouped by who gains or loses what
(`roles.plan`); run the whole plan in one transaction, rolled back unless told to
apply (`apply_plan`), so the database itself validates a dry run. `verify` then
builds the allowed/denied matrix of every operation for every role from
PostgreSQL's privilege functions (no user code ever runs with the tool's rights)
and compares it with the spec.

    spec = load_spec()
    plan = plan_changes(conn, spec)
    print(plan.render_text())
    apply_plan(conn, plan, apply=True)
    assert not verify(conn, spec).violations
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg2.extensions

from roles.apply import apply_plan
from roles.diff import Changes, desired_state, diff
from roles.exceptions import (
    ApplyError,
    DatabaseMismatch,
    RolesError,
    SpecError,
    UnsafePlan,
    UnsupportedTarget,
    VerifyError,
)
from roles.generate import generate_spec
from roles.inspect import Snapshot, inspect
from roles.passwords import DesiredPassword, resolve_passwords
from roles.plan import Plan, Statement, render_postgres, render_redshift
from roles.spec import Spec, load_spec, parse_spec
from roles.verify import Check, VerifyResult, verify


def plan_changes(
    conn: psycopg2.extensions.connection,
    spec: Spec,
    *,
    passwords: Mapping[str, DesiredPassword] | None = None,
) -> Plan:
    """Inspect the connected database and plan what the spec changes there.

    Args:
        conn: an admin connection (a superuser, or a role that may create roles and
            owns or is a member of the owners of the managed objects).
        spec: from `load_spec`.
        passwords: from `resolve_passwords`; by default each user's ``password_env``.
    """
    snapshot = inspect(conn)
    if passwords is None:
        passwords = resolve_passwords(spec)
    desired = desired_state(spec, snapshot, passwords)
    return render_postgres(diff(spec, desired, snapshot))


__all__ = [
    "ApplyError",
    "Changes",
    "Check",
    "DatabaseMismatch",
    "DesiredPassword",
    "Plan",
    "RolesError",
    "Snapshot",
    "Spec",
    "SpecError",
    "Statement",
    "UnsafePlan",
    "UnsupportedTarget",
    "VerifyError",
    "VerifyResult",
    "apply_plan",
    "desired_state",
    "diff",
    "generate_spec",
    "inspect",
    "load_spec",
    "parse_spec",
    "plan_changes",
    "render_postgres",
    "render_redshift",
    "resolve_passwords",
    "verify",
]
