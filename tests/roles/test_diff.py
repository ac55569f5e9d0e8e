"""The difference between spec and catalog, as pure functions on hand-made snapshots."""

from __future__ import annotations

import dataclasses
import random

import pytest
import yaml

from roles.diff import Desired, desired_state, diff
from roles.exceptions import DatabaseMismatch, UnsafePlan
from roles.inspect import (
    PUBLIC,
    DefaultGrant,
    Function,
    Grant,
    Membership,
    Relation,
    RoleState,
    Snapshot,
)
from roles.passwords import DesiredPassword, Secret, scram_verifier
from roles.spec import Spec, parse_spec

SPEC_TEXT = """
        schemas:
          raw_*:   {owner: etl, stage: raw}
          raw_app: {owner: etl, stage: raw}
          marts:   {owner: etl, stage: marts}
        roles:
          etl:       {database: [connect, temp, create]}
          analyst:   {read: [raw_*, marts], database: [connect, temp]}
          dashboard: {read: [marts]}
        users:
          runner: {member_of: [etl]}
          alice:  {member_of: [analyst]}
        """
SPEC = parse_spec(yaml.safe_load(SPEC_TEXT))


def empty(**fields: object) -> Snapshot:
    base = {
        "database": "warehouse",
        "database_owner": "postgres",
        "current_user": "postgres",
        "is_superuser": True,
        "server_version": 150000,
        "roles": {"postgres": RoleState("postgres", login=True, superuser=True)},
    }
    return Snapshot(**(base | fields))  # type: ignore[arg-type]


def matching(spec: Spec, *, relations: tuple[Relation, ...] = (), **fields: object) -> Snapshot:
    """A snapshot of a database where the spec was applied."""
    seed = empty(schemas={"raw_app": "etl", "marts": "etl"}, relations=relations, **fields)
    wanted = desired_state(spec, seed)
    roles = dict(seed.roles) | {
        role: RoleState(role, login=login, password_known=True)
        for role, login in wanted.roles.items()
    }
    globals_ = {
        DefaultGrant(role, "", "functions", PUBLIC, "EXECUTE")
        for role in roles
        if role not in wanted.creators
    }
    return dataclasses.replace(
        seed,
        roles=roles,
        memberships=wanted.memberships,
        schemas={name: access.owner for name, access in wanted.schemas.items()},
        grants=wanted.grants,
        default_grants=wanted.default_grants | globals_,
    )


def changes_for(snapshot: Snapshot, spec: Spec = SPEC, **passwords: DesiredPassword):
    return diff(spec, desired_state(spec, snapshot, passwords), snapshot)


def texts(items) -> list[str]:
    return [str(item) for item in items]


def test_a_fresh_database_gets_roles_schemas_grants_and_loses_public_access() -> None:
    snapshot = empty(
        grants=frozenset(
            {
                Grant("database", "", "warehouse", PUBLIC, "CONNECT"),
                Grant("database", "", "warehouse", PUBLIC, "TEMPORARY"),
            }
        )
    )
    changes = changes_for(snapshot)
    assert [role.name for role in changes.create_roles] == [
        "alice", "analyst", "dashboard", "etl", "runner",
    ]  # fmt: skip
    assert changes.create_schemas == (("marts", "etl"), ("raw_app", "etl"))
    assert Membership("etl", "runner") in changes.grant_memberships
    assert Grant("schema", "marts", "", "dashboard", "USAGE") in changes.grants
    assert Grant("database", "", "warehouse", "etl", "CREATE") in changes.grants
    assert set(changes.revokes) == set(snapshot.grants)
    # New objects: readable at once whoever of the creators makes them.
    assert (
        DefaultGrant("runner", "raw_app", "tables", "analyst", "SELECT") in changes.default_grants
    )
    assert DefaultGrant("etl", "marts", "tables", "dashboard", "SELECT") in changes.default_grants
    assert DefaultGrant("runner", "marts", "tables", "etl", "INSERT") in changes.default_grants
    # ... and no new function is executable by PUBLIC.
    assert {g for g in changes.default_revokes if g.grantee == PUBLIC} == {
        DefaultGrant("etl", "", "functions", PUBLIC, "EXECUTE"),
        DefaultGrant("runner", "", "functions", PUBLIC, "EXECUTE"),
    }
    assert "user runner is created LOGIN without a password (no password_env)" in changes.notes


def test_an_applied_database_has_nothing_to_do() -> None:
    events = Relation("raw_app", "events", "r", "runner")
    changes = changes_for(matching(SPEC, relations=(events,)))
    assert changes.is_empty, changes


def test_a_hand_grant_in_a_managed_schema_is_revoked() -> None:
    events = Relation("raw_app", "events", "r", "runner")
    snapshot = matching(SPEC, relations=(events,))
    hand = Grant("table", "raw_app", "events", "analyst", "UPDATE")
    column = Grant("column", "raw_app", "events", "dashboard", "SELECT", "payload")
    snapshot = dataclasses.replace(snapshot, grants=snapshot.grants | {hand, column})
    changes = changes_for(snapshot)
    assert changes.revokes == (column, hand)
    assert not changes.grants


def test_grants_to_roles_outside_the_spec_and_objects_outside_managed_schemas_are_only_noted():
    snapshot = matching(SPEC)
    foreign = Grant("schema", "raw_app", "", "bob", "USAGE")
    outside = Grant("table", "dev_alice", "scratch", "analyst", "SELECT")
    snapshot = dataclasses.replace(
        snapshot,
        grants=snapshot.grants | {foreign, outside},
        schemas=dict(snapshot.schemas) | {"dev_alice": "alice"},
    )
    changes = changes_for(snapshot)
    assert changes.is_empty
    assert changes.notes == (
        "schema dev_alice (owner alice) is not in the spec and was left alone; declare it "
        "under schemas: to manage it",
        "schema dev_alice is not managed: privileges of analyst there were left alone",
        "schema raw_app: privileges of bob, which the spec does not manage, were left alone",
    )


def test_an_existing_raw_schema_matched_by_a_pattern_is_managed_but_never_created() -> None:
    snapshot = matching(SPEC)
    snapshot = dataclasses.replace(snapshot, schemas=dict(snapshot.schemas) | {"raw_crm": "runner"})
    changes = changes_for(snapshot)
    assert [(c.kind, c.schema, c.new_owner) for c in changes.owners] == [
        ("schema", "raw_crm", "etl")
    ]
    assert Grant("schema", "raw_crm", "", "analyst", "USAGE") in changes.grants
    assert not changes.create_schemas
    assert "raw_staging" not in desired_state(SPEC, snapshot).schemas


def test_an_object_owned_outside_the_creators_goes_to_the_schema_owner() -> None:
    by_admin = Relation("marts", "by_admin", "m", "postgres")
    snapshot = matching(SPEC, relations=(by_admin,))
    # The owner-to-be held a privilege on it: after ALTER OWNER it is the owner's own.
    stray = Grant("table", "marts", "by_admin", "etl", "SELECT")
    snapshot = dataclasses.replace(snapshot, grants=snapshot.grants | {stray})
    changes = changes_for(snapshot)
    assert [(c.subkind, c.name, c.old_owner, c.new_owner) for c in changes.owners] == [
        ("m", "by_admin", "postgres", "etl")
    ]
    assert stray not in changes.revokes


def test_a_sequence_linked_to_a_table_keeps_following_its_table() -> None:
    sequence = Relation("raw_app", "events_id_seq", "S", "postgres", linked=True)
    changes = changes_for(matching(SPEC, relations=(sequence,)))
    assert not changes.owners


def test_dangerous_attributes_and_memberships_are_taken_away() -> None:
    snapshot = matching(SPEC)
    roles = dict(snapshot.roles)
    roles["dashboard"] = RoleState("dashboard", superuser=True, createrole=True, bypassrls=True)
    roles["alice"] = RoleState("alice", login=True, createdb=True, inherit=False)
    memberships = snapshot.memberships | {
        Membership("etl", "analyst"),  # analyst could SET ROLE etl
        Membership("pg_write_all_data", "dashboard"),
        Membership("etl", "bob"),  # someone outside the spec in a managed role
        Membership("etl", "postgres"),  # the admin running the plan: left alone
    }
    changes = changes_for(dataclasses.replace(snapshot, roles=roles, memberships=memberships))
    assert [(c.name, c.attributes) for c in changes.alter_roles] == [
        ("alice", ("NOCREATEDB", "INHERIT")),
        ("dashboard", ("NOSUPERUSER", "NOCREATEROLE", "NOBYPASSRLS")),
    ]
    assert changes.revoke_memberships == (
        Membership("etl", "analyst"),
        Membership("etl", "bob"),
        Membership("pg_write_all_data", "dashboard"),
    )


@pytest.mark.parametrize(("version", "regranted"), [(150000, False), (160000, True)])
def test_a_membership_without_inherit_is_granted_again_on_16(version: int, regranted: bool) -> None:
    snapshot = matching(SPEC, server_version=version)
    weak = Membership("etl", "runner", inherit=False, set=True)
    memberships = (snapshot.memberships - {Membership("etl", "runner")}) | {weak}
    changes = changes_for(dataclasses.replace(snapshot, memberships=memberships))
    assert (Membership("etl", "runner") in changes.grant_memberships) is regranted


def test_passwords_change_only_when_they_differ() -> None:
    snapshot = matching(SPEC)
    roles = dict(snapshot.roles)
    roles["runner"] = dataclasses.replace(roles["runner"], password=scram_verifier("s3cret"))
    snapshot = dataclasses.replace(snapshot, roles=roles)
    same = DesiredPassword("runner", Secret("s3cret"), "RUNNER_PASSWORD")
    assert changes_for(snapshot, runner=same).is_empty
    other = DesiredPassword("runner", Secret("n3w"), "RUNNER_PASSWORD")
    changes = changes_for(snapshot, runner=other)
    assert [change.user for change in changes.passwords] == ["runner"]
    assert "n3w" not in repr(changes)
    unknown = dataclasses.replace(roles["runner"], password=None, password_known=False)
    changes = changes_for(
        dataclasses.replace(snapshot, roles=roles | {"runner": unknown}), runner=other
    )
    assert not changes.passwords
    assert any("password was left as it is" in note for note in changes.notes)


def test_the_spec_may_not_manage_the_role_running_the_plan() -> None:
    with pytest.raises(UnsafePlan, match="'runner', the role running this plan"):
        desired_state(SPEC, empty(current_user="runner"))


def test_the_spec_database_must_be_the_connected_one() -> None:
    spec = dataclasses.replace(SPEC, database="warehouse")
    with pytest.raises(DatabaseMismatch, match="connect to 'warehouse'"):
        desired_state(spec, empty(database="other"))


def test_output_is_sorted_whatever_the_catalog_order() -> None:
    relations = tuple(Relation("marts", f"t{i}", "r", "postgres") for i in range(20))
    shuffled = list(relations)
    random.Random(7).shuffle(shuffled)
    first = changes_for(empty(schemas={"marts": "etl"}, relations=relations))
    second = changes_for(empty(schemas={"marts": "etl"}, relations=tuple(shuffled)))
    assert first == second
    assert list(first.grants) == sorted(first.grants)


def test_desired_state_is_a_frozen_value() -> None:
    wanted = desired_state(SPEC, empty())
    assert isinstance(wanted, Desired)
    with pytest.raises(dataclasses.FrozenInstanceError):
        wanted.database = "x"  # type: ignore[misc]


def test_readers_get_no_execute_on_functions_unless_the_spec_says_so() -> None:
    function = Function("marts", "answer", "", "f", "runner", security_definer=True)
    snapshot = matching(SPEC, functions=(function,))
    wanted = desired_state(SPEC, snapshot)
    executors = {g.grantee for g in wanted.grants if g.kind == "function"}
    assert executors == {"etl"}  # the writer (owner role); not analyst, not dashboard
    assert not [d for d in wanted.default_grants if d.objtype == "functions" and d.grantee != "etl"]
    changes = changes_for(snapshot)
    assert any("marts.answer() is SECURITY DEFINER (runs as runner)" in n for n in changes.notes)
    data = yaml.safe_load(SPEC_TEXT)
    data["roles"]["analyst"]["execute"] = ["marts"]
    with_execute = parse_spec(data)
    wanted = desired_state(with_execute, snapshot)
    assert Grant("function", "marts", "answer", "analyst", "EXECUTE") in wanted.grants
    assert DefaultGrant("runner", "marts", "functions", "analyst", "EXECUTE") in (
        wanted.default_grants
    )


def test_role_settings_and_connection_limits_are_planned_like_grants() -> None:
    data = yaml.safe_load(SPEC_TEXT)
    data["roles"]["dashboard"]["settings"] = {"statement_timeout": "2min"}
    data["roles"]["dashboard"]["connection_limit"] = 20
    data["users"]["bi"] = {"member_of": ["dashboard"], "settings": {"lock_timeout": "5s"}}
    spec = parse_spec(data)
    snapshot = matching(spec)
    changes = changes_for(snapshot, spec)
    assert [(c.role, c.parameter, c.value) for c in changes.settings] == [
        ("bi", "lock_timeout", "5s"),
        ("bi", "statement_timeout", "2min"),
    ]
    assert changes.connection_limits == (("bi", 20),)
    # Applied, nothing to do; a setting changed by hand (or on a group role) is drift.
    roles = dict(snapshot.roles)
    roles["bi"] = dataclasses.replace(roles["bi"], connection_limit=20)
    applied = dataclasses.replace(
        snapshot,
        roles=roles,
        settings={"bi": {"lock_timeout": "5s", "statement_timeout": "2min"}},
    )
    assert changes_for(applied, spec).is_empty
    drifted = dataclasses.replace(
        applied,
        settings={
            "bi": {"lock_timeout": "5s", "statement_timeout": "0"},
            "dashboard": {"work_mem": "1GB"},
        },
        database_settings={"bi": {"statement_timeout": "0"}},
    )
    changes = changes_for(drifted, spec)
    assert [(c.role, c.parameter, c.value, c.database) for c in changes.settings] == [
        ("bi", "statement_timeout", "2min", ""),
        ("bi", "statement_timeout", None, "warehouse"),
        ("dashboard", "work_mem", None, ""),
    ]


def test_roles_the_spec_does_not_know_are_reported_with_their_attributes() -> None:
    snapshot = matching(SPEC)
    roles = dict(snapshot.roles) | {
        "intruder": RoleState("intruder", login=True, superuser=True),
        "pg_monitor": RoleState("pg_monitor"),
        "monitoring": RoleState("monitoring", login=True),
    }
    snapshot = dataclasses.replace(snapshot, roles=roles)
    changes = changes_for(snapshot)
    assert [(r.name, r.attributes) for r in changes.unknown_roles] == [
        ("intruder", ("LOGIN", "SUPERUSER")),
        ("monitoring", ("LOGIN",)),
    ]  # not postgres (running the plan), not pg_monitor (built in)
    assert changes.is_empty  # reported, never dropped
    data = yaml.safe_load(SPEC_TEXT)
    data["known_roles"] = ["monitor*"]
    assert [r.name for r in changes_for(snapshot, parse_spec(data)).unknown_roles] == ["intruder"]


def test_grants_to_managed_roles_on_schema_public_are_revoked() -> None:
    snapshot = matching(SPEC)
    hand = Grant("schema", "public", "", "alice", "CREATE")
    other = Grant("schema", "public", "", "bob", "CREATE")
    snapshot = dataclasses.replace(
        snapshot,
        schemas=dict(snapshot.schemas) | {"public": "pg_database_owner"},
        grants=snapshot.grants | {hand, other},
    )
    changes = changes_for(snapshot)
    assert changes.revokes == (hand,)  # bob is not managed: left alone
