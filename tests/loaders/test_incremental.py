"""High-water-mark loading against a real PostgreSQL: complete, idempotent,
lossless under late commits, deletes recorded, failures leave nothing behind."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from loaders import deletes
from loaders.config import SourceConfig, TableConfig
from loaders.exceptions import LoadRunFailed
from loaders.load import RawTable, declared_index_name, ensure_indexes, index_name
from loaders.pipeline import raise_on_failure
from tests.loaders.conftest import custom_source, execute, only, table_rows

CUSTOMER_COLUMNS = "customer_id, email, full_name, country_code, is_marketing_opt_in, signed_up_at, created_at, updated_at"


def add_customers(dsn: str, first: int, last: int) -> None:
    execute(
        dsn,
        "insert into customers (customer_id, email, full_name, country_code, signed_up_at) "
        "select g, 'user' || g || '@example.com', 'User ' || g, 'US', now() "
        "from generate_series(%s, %s) as g",
        (first, last),
    )


def test_first_load_copies_every_row_and_a_second_run_writes_nothing(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    add_customers(source_dsn, 1, 500)
    first = run_load(only(app_source, "customers", "countries"))
    assert first["customers"].inserted == 500
    assert first["countries"].inserted == 3
    assert table_rows(source_dsn, "customers", CUSTOMER_COLUMNS) == table_rows(
        warehouse_dsn, "raw_app.customers", CUSTOMER_COLUMNS
    )
    loaded_before = table_rows(
        warehouse_dsn, "raw_app.customers", "customer_id, _loaded_at, _batch_id"
    )

    second = run_load(only(app_source, "customers", "countries"))
    assert (second["customers"].inserted, second["customers"].updated) == (0, 0)
    assert (second["countries"].inserted, second["countries"].updated) == (0, 0)
    assert (
        table_rows(warehouse_dsn, "raw_app.customers", "customer_id, _loaded_at, _batch_id")
        == loaded_before
    )
    # raw tables are indexed for merges (key) and for incremental readers (_loaded_at)
    indexes = execute(
        warehouse_dsn,
        "select indexname, indexdef from pg_indexes "
        "where schemaname = 'raw_app' and tablename = 'customers' order by indexname",
    )
    assert [name for name, _ in indexes] == [
        "customers__tidewater_loaded_at",
        "customers__tidewater_pk",
    ]
    assert indexes[0][1].endswith("(_loaded_at)")
    assert "UNIQUE" in indexes[1][1] and indexes[1][1].endswith("(customer_id)")


def test_a_first_load_stamps_every_row_with_its_batch_and_leaves_the_default_to_the_session(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    """A created table takes the batch id as a constant default for its first COPY
    (a per-row current_setting() is a fifth of the COPY's time), then gets the
    session setting back as its default."""
    add_customers(source_dsn, 1, 300)
    first = run_load(only(app_source, "customers"))["customers"]
    assert execute(
        warehouse_dsn, "select _batch_id, count(*) from raw_app.customers group by 1"
    ) == [(first.batch_id, 300)]
    default = execute(
        warehouse_dsn,
        "select column_default from information_schema.columns "
        "where table_schema = 'raw_app' and table_name = 'customers' "
        "and column_name = '_batch_id'",
    )
    assert default == [("current_setting('tidewater.batch_id'::text, true)",)]
    add_customers(source_dsn, 301, 310)
    second = run_load(only(app_source, "customers"))["customers"]
    assert second.batch_id != first.batch_id
    assert execute(
        warehouse_dsn,
        "select _batch_id, count(*) from raw_app.customers group by 1 order by 2",
    ) == [(second.batch_id, 10), (first.batch_id, 300)]


def raw_indexes(dsn: str, table: str) -> dict[str, str]:
    return dict(
        execute(
            dsn,
            "select indexname, indexdef from pg_indexes "
            "where schemaname = 'raw_app' and tablename = %s",
            (table,),
        )
    )


def test_declared_indexes_are_built_and_dropped_as_the_declaration_changes(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    add_customers(source_dsn, 1, 50)
    declared = (("country_code",), ("email", "full_name"))
    run_load(only(app_source, "customers", indexes=declared))
    built = {
        name: definition
        for name, definition in raw_indexes(warehouse_dsn, "customers").items()
        if "__tidewater_ix_" in name
    }
    assert sorted(built) == sorted(index_name("customers", s) for s in built_suffixes(declared))
    assert sorted(d.split(" USING btree ")[1] for d in built.values()) == [
        "(country_code)",
        "(email, full_name)",
    ]
    # A rerun with the same declaration builds nothing; a changed one drops what is
    # no longer declared and builds what is new, keeping the key and _loaded_at ones.
    run_load(only(app_source, "customers", indexes=declared))
    assert {k: v for k, v in raw_indexes(warehouse_dsn, "customers").items() if k in built} == built
    run_load(only(app_source, "customers", indexes=(("full_name",),)))
    after = raw_indexes(warehouse_dsn, "customers")
    assert sorted(after) == sorted(
        [
            "customers__tidewater_loaded_at",
            "customers__tidewater_pk",
            declared_index_name("customers", ("full_name",)),
        ]
    )
    assert after[declared_index_name("customers", ("full_name",))].endswith("(full_name)")


def built_suffixes(declared: tuple[tuple[str, ...], ...]) -> list[str]:
    return [declared_index_name("customers", columns).split("__")[-1] for columns in declared]


def test_an_index_on_a_column_the_table_lacks_fails_the_load_and_writes_nothing(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    add_customers(source_dsn, 1, 5)
    result = run_load(only(app_source, "customers", indexes=(("countrycode",),)))["customers"]
    assert (result.status, result.attempts, result.error_class) == (
        "failed",
        1,
        "terminal",
    )
    assert "indexes names 'countrycode'" in result.error and "country_code" in result.error
    assert "\n" not in result.error
    assert execute(warehouse_dsn, "select to_regclass('raw_app.customers')") == [(None,)]


def test_index_names_of_long_tables_stay_distinct_within_63_bytes() -> None:
    table = "t" * 63
    names = {index_name(table, "tidewater_pk"), index_name(table, "tidewater_loaded_at")}
    assert len(names) == 2 and all(len(name) <= 63 for name in names)
    assert index_name("orders", "tidewater_pk") == "orders__tidewater_pk"


def test_updates_merge_by_primary_key_without_duplicates(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    add_customers(source_dsn, 1, 100)
    run_load(only(app_source, "customers"))
    execute(source_dsn, "update customers set full_name = 'Renamed' where customer_id <= 10")
    add_customers(source_dsn, 101, 120)
    result = run_load(only(app_source, "customers"))["customers"]
    assert (result.inserted, result.updated) == (20, 10)
    assert execute(
        warehouse_dsn, "select count(*), count(distinct customer_id) from raw_app.customers"
    ) == [(120, 120)]
    assert table_rows(source_dsn, "customers", CUSTOMER_COLUMNS) == table_rows(
        warehouse_dsn, "raw_app.customers", CUSTOMER_COLUMNS
    )


def _late_commit_scenario(
    source_dsn: str, app_source: SourceConfig, run_load, *, protect: bool
) -> None:
    add_customers(source_dsn, 1, 10)
    # Delete detection would also heal the gap (it re-reads differing key ranges);
    # switch it off so the high-water mark alone is under test.
    source = only(app_source, "customers", late_commit_protection=protect, detect_deletes=False)
    run_load(source)
    # A writer starts, stamps its row with its start time, and is still open ...
    writer = psycopg2.connect(source_dsn)
    with writer.cursor() as cur:
        cur.execute(
            "insert into customers (customer_id, email, full_name, country_code, signed_up_at) "
            "values (1000, 'late@example.com', 'Late Writer', 'DE', now())"
        )
    # ... while other rows commit after it started, pushing the mark past it.
    add_customers(source_dsn, 11, 20)
    run_load(source)
    writer.commit()
    writer.close()
    run_load(source)


def test_a_row_committed_late_by_a_long_transaction_still_arrives(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    _late_commit_scenario(source_dsn, app_source, run_load, protect=True)
    assert table_rows(source_dsn, "customers", CUSTOMER_COLUMNS) == table_rows(
        warehouse_dsn, "raw_app.customers", CUSTOMER_COLUMNS
    )


def test_without_late_commit_protection_the_late_row_is_lost(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    """The protection is what saves the row: switched off, the same scenario loses it."""
    _late_commit_scenario(source_dsn, app_source, run_load, protect=False)
    assert execute(
        warehouse_dsn, "select count(*) from raw_app.customers where customer_id = 1000"
    ) == [(0,)]


def test_hard_deletes_are_recorded_not_kept_live(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    add_customers(source_dsn, 1, 60_000)
    add_customers(source_dsn, 60_001, 60_010)  # a later batch: the mark moves past the bulk
    run_load(only(app_source, "customers"))
    execute(source_dsn, "delete from customers where customer_id in (5, 45005, 45006)")
    result = run_load(only(app_source, "customers"))["customers"]
    assert result.deleted == 3
    # Only the two key ranges that differ were re-read (plus the rows at the mark),
    # not the whole table.
    assert result.reread <= 2 * deletes.RANGE_SIZE + 10
    deleted = execute(
        warehouse_dsn,
        "select customer_id from raw_app.customers where _deleted_at is not null order by 1",
    )
    assert deleted == [(5,), (45005,), (45006,)]
    again = run_load(only(app_source, "customers"))["customers"]
    assert (again.deleted, again.updated, again.inserted) == (0, 0, 0)


def test_a_key_deleted_and_reinserted_comes_back_live(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    add_customers(source_dsn, 1, 10)
    run_load(only(app_source, "customers"))
    execute(source_dsn, "delete from customers where customer_id = 3")
    run_load(only(app_source, "customers"))
    add_customers(source_dsn, 3, 3)
    run_load(only(app_source, "customers"))
    assert execute(
        warehouse_dsn, "select _deleted_at is null from raw_app.customers where customer_id = 3"
    ) == [(True,)]


def test_a_failed_load_leaves_the_warehouse_and_the_mark_as_they_were(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    add_customers(source_dsn, 1, 10)
    run_load(only(app_source, "customers"))
    before_rows = table_rows(warehouse_dsn, "raw_app.customers", "*")
    before_mark = execute(warehouse_dsn, "select * from ops.high_water_marks")
    execute(source_dsn, "update customers set full_name = 'changed'")
    execute(source_dsn, "alter table customers alter column is_marketing_opt_in type text")
    results = run_load(only(app_source, "customers"))
    assert results["customers"].status == "failed"
    assert "not a widening" in results["customers"].error
    with pytest.raises(LoadRunFailed):
        raise_on_failure(list(results.values()))
    assert table_rows(warehouse_dsn, "raw_app.customers", "*") == before_rows
    assert execute(warehouse_dsn, "select * from ops.high_water_marks") == before_mark


def test_loads_of_the_same_table_never_run_at_once(
    source_dsn: str, warehouse_dsn: str, app_source: SourceConfig, run_load
) -> None:
    add_customers(source_dsn, 1, 2000)
    errors: list[BaseException] = []

    def load() -> None:
        try:
            raise_on_failure(list(run_load(only(app_source, "customers")).values()))
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert execute(
        warehouse_dsn, "select count(*), count(distinct customer_id) from raw_app.customers"
    ) == [(2000, 2000)]


def test_deletes_are_detected_on_a_text_key(source_dsn: str, warehouse_dsn: str, run_load) -> None:
    """A key that is not one integer is bucketed by a hash; the reconciliation's
    bucket filter runs with bound parameters (a bare % in it once broke that)."""
    from loaders.config import TableConfig
    from tests.loaders.conftest import custom_source

    execute(
        source_dsn,
        "create table skus (code text primary key, amount int not null, "
        "updated_at timestamptz not null default now())",
    )
    execute(
        source_dsn,
        "insert into skus (code, amount) select 'sku-' || g, g from generate_series(1, 200) as g",
    )
    source = custom_source(
        TableConfig(
            name="skus",
            mode="incremental",
            cursor="updated_at",
            primary_key=("code",),
            detect_deletes=True,
        )
    )
    raise_on_failure(list(run_load(source).values()))
    execute(source_dsn, "delete from skus where code in ('sku-7', 'sku-150')")
    result = run_load(source)["skus"]
    raise_on_failure([result])
    assert result.deleted == 2
    assert execute(
        warehouse_dsn, "select code from raw_app.skus where _deleted_at is not null order by 1"
    ) == [("sku-150",), ("sku-7",)]


def source_scans(dsn: str, table: str) -> int:
    """Scans of a source table counted by the statistics collector, once the loader's
    backend (gone: its counters flush at exit) has reported them."""
    counted = 0
    for _ in range(50):
        counted = execute(
            dsn,
            "select coalesce(seq_scan, 0) + coalesce(idx_scan, 0) from pg_stat_user_tables "
            "where relname = %s",
            (table,),
        )[0][0]
        if counted:
            break
        time.sleep(0.1)
    return int(counted)


def test_a_load_reads_the_window_once_and_takes_its_mark_from_the_rows_staged(
    source_dsn: str, warehouse_dsn: str, run_load
) -> None:
    # No index on the cursor: a separate count or max would be a second full scan.
    execute(
        source_dsn,
        "create table ledger (entry_id int primary key, amount numeric, "
        "updated_at timestamptz not null default clock_timestamp());"
        "insert into ledger (entry_id, amount) select g, g from generate_series(1, 300) as g",
    )
    ledger = custom_source(
        TableConfig(
            name="ledger", mode="incremental", cursor="updated_at", primary_key=("entry_id",)
        )
    )
    execute(source_dsn, "select pg_stat_reset()")
    first = run_load(ledger)["ledger"]
    assert source_scans(source_dsn, "ledger") == 1
    newest = execute(source_dsn, "select max(updated_at) from ledger")[0][0]
    assert (first.rows_read, first.inserted, first.mark_after) == (300, 300, newest)

    execute(source_dsn, "update ledger set amount = -amount where entry_id <= 5")
    execute(source_dsn, "select pg_stat_reset()")
    second = run_load(ledger)["ledger"]
    assert source_scans(source_dsn, "ledger") == 1
    newest = execute(source_dsn, "select max(updated_at) from ledger")[0][0]
    assert (second.updated, second.mark_after) == (5, newest) and second.rows_read >= 5
    assert table_rows(source_dsn, "ledger", "entry_id, amount") == table_rows(
        warehouse_dsn, "raw_app.ledger", "entry_id, amount"
    )


def test_indexes_are_built_with_parallel_workers_for_the_load_transaction_only(
    warehouse_dsn: str,
) -> None:
    table = RawTable("public", "wide", (), ("id",))
    with psycopg2.connect(warehouse_dsn) as conn, conn.cursor() as cur:
        cur.execute("set max_parallel_maintenance_workers = 0")
        cur.execute(
            "create table wide as select g as id, now() as _loaded_at from generate_series(1, 10) as g"
        )
        conn.commit()
        ensure_indexes(cur, table)
        cur.execute(
            "select current_setting('max_parallel_maintenance_workers')::int, "
            "least(current_setting('max_parallel_workers')::int, 4)"
        )
        in_load, allowed = cur.fetchone()
        assert in_load == allowed > 0
        conn.commit()
        cur.execute("show max_parallel_maintenance_workers")
        assert cur.fetchone()[0] == "0"  # the session's own setting is back
