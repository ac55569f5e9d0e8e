"""Reading the audit marks after a green build (transform/audit.py) against a real
PostgreSQL: a relation's mark is its newest `_loaded_at`, found through the
raw table's `_loaded_at` index, even behind dbt's views."""

from __future__ import annotations

from collections.abc import Callable

import psycopg2

from tests.conftest import execute, query
from transform.audit import read_marks, write_marks

# A staging view the way dbt writes them (CTEs); `max(_loaded_at)` over it alone
# reads every row.
VIEW = """
create view staging.stg_things as
with source as (select * from raw_app.things),
renamed as (select thing_id, upper(label) as label, _loaded_at from source)
select * from renamed
"""


def test_a_mark_moves_to_the_newest_row_and_never_back(
    make_database: Callable[[str], str],
) -> None:
    dsn = make_database("audit_marks")
    execute(
        dsn,
        "create schema raw_app",
        "create schema staging",
        "create schema ops",
        "create table ops.audit_marks (relation_name text primary key, "
        "audited_through timestamptz, code_fingerprint text, run_id text, "
        "recorded_at timestamptz)",
        "create table raw_app.things (thing_id int, label text, _loaded_at timestamptz)",
        "create index on raw_app.things (_loaded_at)",
        "insert into raw_app.things select g, 'x', timestamptz '2026-01-01' "
        "+ g * interval '1 second' from generate_series(1, 20000) as g",
        "analyze raw_app.things",
        VIEW,
    )
    relations = [("staging", "stg_things"), ("raw_app", "things")]
    conn = psycopg2.connect(dsn)

    def rows_read() -> int:
        """Rows and index entries read from raw_app.things so far (this session's
        counts flushed first)."""
        with conn.cursor() as cur:
            cur.execute("select pg_stat_force_next_flush()")
        conn.commit()
        return query(
            dsn,
            "select t.seq_tup_read + coalesce(sum(i.idx_tup_read), 0) "
            "from pg_stat_user_tables as t left join pg_stat_user_indexes as i "
            "on i.relid = t.relid where t.relid = 'raw_app.things'::regclass "
            "group by t.seq_tup_read",
        )[0][0]

    try:
        first = read_marks(conn, relations)
        newest = query(dsn, "select max(_loaded_at) from raw_app.things")[0][0]
        assert first == {"staging.stg_things": newest, "raw_app.things": newest}
        write_marks(conn, first, "code", "run-1")
        conn.commit()

        # Nothing new: the marks stay.
        assert read_marks(conn, relations) == first
        # A row loaded later moves them, and the view's mark is found through the
        # index from the old mark on: a few rows read, not 20,000.
        execute(dsn, "insert into raw_app.things values (0, 'y', now())")
        later = query(dsn, "select max(_loaded_at) from raw_app.things")[0][0]
        before = rows_read()
        assert read_marks(conn, relations) == {
            "staging.stg_things": later,
            "raw_app.things": later,
        }
        assert rows_read() - before < 100
        # The newest rows deleted, a mark does not go back: rows loaded later are
        # newer than it still.
        write_marks(conn, {"staging.stg_things": later, "raw_app.things": later}, "code", "run-2")
        conn.commit()
        execute(dsn, "delete from raw_app.things where thing_id = 0")
        assert read_marks(conn, relations) == {
            "staging.stg_things": later,
            "raw_app.things": later,
        }
    finally:
        conn.close()
