"""The statements the publish step runs, on PostgreSQL and Redshift."""

from __future__ import annotations

import psycopg2
import pytest

from transform.publish import (
    Grant,
    SchemaPrivileges,
    acl_items,
    parse_acl,
    redshift_swap_statements,
)


def test_aclitems_parse_from_postgres_and_redshift_catalogs() -> None:
    text = '{etl=UC/etl,"group analyst=U/etl","\\"odd role\\"=r*/etl",=U/etl}'
    assert parse_acl(acl_items(text)) == {
        Grant("etl", "USAGE"),
        Grant("etl", "CREATE"),
        Grant("analyst", "USAGE", group=True),
        Grant("odd role", "SELECT"),
        Grant("", "USAGE"),
    }
    assert parse_acl(acl_items(["dashboard=r/etl"])) == {Grant("dashboard", "SELECT")}
    with pytest.raises(ValueError, match="not an aclitem"):
        parse_acl(["no equals sign"])


def test_redshift_publish_trades_schema_names_and_moves_the_dashboard_grants(
    server_admin_dsn: str,
) -> None:
    analyst, dashboard = Grant("analyst", "SELECT", True), Grant("dashboard", "SELECT", True)
    usage = Grant("dashboard", "USAGE", True)
    live = SchemaPrivileges(
        on_schema=frozenset({usage, Grant("analyst", "USAGE", True)}),
        on_new_tables=frozenset({analyst, dashboard}),
        defaults=frozenset({("runner", "r", analyst), ("runner", "r", dashboard)}),
    )
    build = SchemaPrivileges(
        on_schema=frozenset({Grant("analyst", "USAGE", True)}),
        on_new_tables=frozenset({analyst}),
        defaults=frozenset({("runner", "r", analyst)}),
    )
    conn = psycopg2.connect(server_admin_dsn)
    try:
        rendered = [
            statement.as_string(conn)
            for statement in redshift_swap_statements("marts", "marts_build", live, build)
        ]
    finally:
        conn.close()
    assert rendered == [
        'alter schema "marts" rename to "marts__tw_publish_swap"',
        'alter schema "marts_build" rename to "marts"',
        'alter schema "marts__tw_publish_swap" rename to "marts_build"',
        'grant USAGE on schema "marts" to GROUP "dashboard"',
        'alter default privileges for user "runner" in schema "marts" grant SELECT on tables '
        'to GROUP "dashboard"',
        'grant SELECT on all tables in schema "marts" to GROUP "dashboard"',
        'revoke USAGE on schema "marts_build" from GROUP "dashboard"',
        'alter default privileges for user "runner" in schema "marts_build" revoke SELECT on '
        'tables from GROUP "dashboard"',
        'revoke SELECT on all tables in schema "marts_build" from GROUP "dashboard"',
    ]
