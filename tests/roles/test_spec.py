"""Spec validation: every bad input names the field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from roles.exceptions import SpecError
from roles.spec import load_spec, parse_spec
from tidewater.paths import ROLES_SPEC

VALID = """
pipeline_role: etl
schemas:
  raw_*:   {owner: etl, stage: raw}
  raw_app: {owner: etl, stage: raw}
  marts:   {owner: etl, stage: marts}
roles:
  etl:       {database: [connect, temp, create]}
  analyst:   {read: [raw_*, marts], sandbox: true}
  dashboard: {read: [marts]}
users:
  runner: {member_of: [etl], password_env: RUNNER_PASSWORD}
  alice:  {member_of: [analyst]}
"""


def _data(**changes: object) -> dict:
    """The valid spec with dotted paths replaced (value None deletes the key)."""
    data = yaml.safe_load(VALID)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = data
        for part in parents:
            node = node[part]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return data


def test_the_shipped_spec_is_valid() -> None:
    spec = load_spec()
    assert {"etl", "analyst", "dashboard"} <= spec.role_names
    assert spec.user("tidewater_etl_runner").member_of == ("etl",)
    assert spec.user("tidewater_etl_runner").password_env == "TIDEWATER_ETL_PASSWORD"
    assert spec.pipeline_role == "etl"


def test_prefix_names_roles_users_owners_but_not_schemas() -> None:
    spec = load_spec(ROLES_SPEC, prefix="twt_x_")
    assert spec.role_names == {"twt_x_etl", "twt_x_analyst", "twt_x_dashboard"}
    assert "twt_x_tidewater_etl_runner" in spec.user_names
    assert spec.pipeline_role == "twt_x_etl"
    assert {schema.owner for schema in spec.schemas} == {"twt_x_etl"}
    assert "raw_app" in {schema.name for schema in spec.schemas}
    assert spec.user("twt_x_analyst_alice").member_of == ("twt_x_analyst",)
    assert "sandbox_twt_x_analyst_alice" in spec.sandboxes()


def test_patterns_match_existing_schemas_and_exact_names_win() -> None:
    spec = parse_spec(_data())
    assert spec.schema_for("raw_crm").name == "raw_*"
    assert spec.schema_for("raw_app").name == "raw_app"
    assert spec.schema_for("staging") is None
    assert spec.schema_for("sandbox_alice").owner == "alice"
    assert spec.role("analyst").level("raw_crm") == "read"
    assert spec.declared_schemas() == ("marts", "raw_app", "sandbox_alice")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"roles__analyst__reed": ["marts"]},
            "roles.analyst.reed: unknown key; allowed: connection_limit, database, execute, read, "
            "sandbox, settings, write",
        ),
        (
            {"rolez": {}},
            "rolez: unknown key; allowed: database, known_roles, pipeline_role, roles,",
        ),
        (
            {"roles__analyst__read": ["mart"]},
            "roles.analyst.read[0]: unknown schema 'mart'; declare it under schemas: or "
            "choose one of: marts, raw_*, raw_app",
        ),
        (
            {"roles__analyst__read": ["stag*"]},
            "roles.analyst.read[0]: unknown schema 'stag*'",
        ),
        (
            {"users__alice__member_of": ["analysts"]},
            "users.alice.member_of[0]: unknown role 'analysts'; choose one of: analyst, "
            "dashboard, etl",
        ),
        (
            {"schemas__marts__owner": "nobody"},
            "schemas.marts.owner: unknown role 'nobody'; choose one of: analyst, dashboard, etl",
        ),
        ({"roles__bad'name": {}}, 'roles: "bad\'name" is not a valid name; use lowercase'),
        ({"roles__x; drop role etl": {}}, "roles: 'x; drop role etl' is not a valid name"),
        ({'users__a"b': {}}, "users: 'a\"b' is not a valid name"),
        ({"roles__Analyst": {}}, "roles: 'Analyst' is not a valid name"),
        ({"roles__public": {}}, "roles: 'public' is reserved in PostgreSQL"),
        ({"roles__pg_monitor": {}}, "roles: 'pg_monitor' starts with pg_"),
        ({"roles__" + "r" * 64: {}}, "is longer than 63 bytes"),
        ({"schemas__ra*w": {"owner": "etl"}}, "schemas: pattern 'ra*w' is not allowed"),
        ({"schemas__drop;me": {"owner": "etl"}}, "schemas: 'drop;me' is not a valid name"),
        (
            {"schemas__marts__stage": "mart"},
            "schemas.marts.stage: 'mart' is not allowed; choose one of: raw, staging, "
            "intermediate, marts, snapshots, ops, other",
        ),
        (
            {"roles__etl__database": ["connect", "all"]},
            "roles.etl.database[1]: 'all' is not allowed; choose one of: connect, temp, create",
        ),
        ({"schemas__marts__owner": None}, "schemas.marts.owner: missing; add it"),
        (
            {"roles__analyst__read": "marts"},
            "roles.analyst.read: expected a list of schema names, got str",
        ),
        ({"roles__analyst__sandbox": "yes"}, "roles.analyst.sandbox: expected true or false"),
        (
            {"users__alice__password_env": "ALICE-PW"},
            "users.alice.password_env: 'ALICE-PW' is not an environment variable name",
        ),
        (
            {"users__alice__password": "hunter2"},
            "users.alice.password: unknown key; allowed: connection_limit, member_of, "
            "password_env, settings",
        ),
        ({"users__etl": {}}, "users.etl: 'etl' is also under roles:; rename one"),
        (
            {"roles__dashboard__settings": {"statment_timeout": "1min"}},
            "roles.dashboard.settings: 'statment_timeout' is not allowed; choose one of: "
            "statement_timeout, idle_in_transaction_session_timeout",
        ),
        (
            {"roles__dashboard__settings": {"statement_timeout": ["1min"]}},
            "roles.dashboard.settings.statement_timeout: expected a value such as 60s",
        ),
        (
            {"users__alice__connection_limit": -5},
            "users.alice.connection_limit: -5 is less than the minimum of -1",
        ),
        (
            {"roles__dashboard__execute": ["raw_app"]},
            "roles.dashboard.execute[0]: 'raw_app' is not under its read or write",
        ),
        ({"known_roles": ["Bad Name"]}, "known_roles[0]: 'Bad Name' is not a role name"),
        (
            {"roles__dashboard__write": ["marts"]},
            "roles.dashboard: 'marts' is under both read and write",
        ),
        (
            {"pipeline_role": "loader"},
            "pipeline_role: unknown role 'loader'; choose the role loaders and dbt work as",
        ),
    ],
)
def test_bad_spec_names_the_field_and_what_is_allowed(changes: dict, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(_data(**changes), path="roles.yml")
    assert message in str(caught.value)
    assert str(caught.value).endswith("fix the spec, nothing was applied")
    assert any(message in problem for problem in caught.value.problems)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"schemas__raw_app__owner": "analyst"},
            "schemas.raw_app: the pipeline role 'etl' could not load it (stage raw); set "
            "owner: etl or add raw_app under roles.etl.write",
        ),
        (
            {"roles__etl__database": ["connect", "temp"]},
            "roles.etl.database: the pipeline role needs create",
        ),
        (
            {"roles__etl__database": None},
            "roles.etl.database: the pipeline role needs create, temp",
        ),
    ],
)
def test_a_spec_cannot_take_away_what_the_etl_role_needs(changes: dict, message: str) -> None:
    with pytest.raises(SpecError, match="nothing was applied") as caught:
        parse_spec(_data(**changes))
    assert message in str(caught.value)


def test_writing_instead_of_owning_a_raw_schema_is_enough_for_the_pipeline() -> None:
    spec = parse_spec(_data(schemas__raw_app__owner="analyst", roles__etl__write=["raw_app"]))
    assert spec.role("etl").level("raw_app") == "write"


def test_every_problem_is_reported_at_once() -> None:
    data = _data(roles__analyst__read=["mart"], users__alice__member_of=["analysts"])
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    assert len(caught.value.problems) == 2


def test_a_bad_prefix_is_refused() -> None:
    with pytest.raises(SpecError, match="prefix 'x;' is not allowed"):
        parse_spec(_data(), prefix="x;")


def test_a_missing_file_and_bad_yaml_are_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(tmp_path / "absent.yml")
    broken = tmp_path / "roles.yml"
    broken.write_text("roles: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(broken)
    broken.write_text("- a list\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(broken)


def test_settings_on_a_role_go_to_its_users_and_a_users_own_win() -> None:
    spec = parse_spec(
        _data(
            roles__analyst__settings={"statement_timeout": "30min", "lock_timeout": "10s"},
            roles__analyst__connection_limit=10,
            users__alice__settings={"lock_timeout": "1s"},
            users__alice__connection_limit=3,
            roles__dashboard__settings={"default_transaction_read_only": True},
            users__bi={"member_of": ["dashboard"]},
        )
    )
    assert spec.login_settings("alice") == {"lock_timeout": "1s", "statement_timeout": "30min"}
    assert spec.connection_limit("alice") == 3
    assert spec.login_settings("bi") == {"default_transaction_read_only": "on"}
    assert spec.connection_limit("bi") == -1
    # PostgreSQL applies only the login's own settings: the group role carries none.
    assert spec.login_settings("analyst") == {} and spec.connection_limit("analyst") == -1


def test_users_in_two_roles_that_disagree_on_a_setting_must_choose() -> None:
    data = _data(
        roles__analyst__settings={"statement_timeout": "30min"},
        roles__dashboard__settings={"statement_timeout": "2min"},
        users__alice__member_of=["analyst", "dashboard"],
    )
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    assert (
        "users.alice: its roles set statement_timeout to 2min, 30min; "
        "set it under users.alice.settings" in str(caught.value)
    )
    data["users"]["alice"]["settings"] = {"statement_timeout": "5min"}
    assert parse_spec(data).login_settings("alice") == {"statement_timeout": "5min"}


def test_the_shipped_spec_limits_dashboard_and_analyst_logins() -> None:
    spec = load_spec()
    bi = spec.login_settings("dashboard_bi")
    assert bi["idle_in_transaction_session_timeout"] and bi["statement_timeout"]
    assert spec.connection_limit("dashboard_bi") > 0
    assert spec.login_settings("analyst_alice")["idle_in_transaction_session_timeout"]
    assert spec.connection_limit("analyst_alice") > 0
    assert not any(role.execute for role in spec.roles)  # no reader executes functions
