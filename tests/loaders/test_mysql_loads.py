"""MySQL/MariaDB sources keep the PostgreSQL source's guarantees: incremental,
bulk and delete detection; late commits are not lost (and are, with the
protection off); a login without PROCESS holds the mark; concurrent writers lose,
duplicate and invent no row; a loader killed with SIGKILL mid-load leaves nothing
behind and the next run loads everything. Against the MariaDB service."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from loaders.config import TableConfig
from loaders.pipeline import raise_on_failure
from tests.loaders.conftest import (
    MYSQL_ADMIN,
    MYSQL_HOST,
    MYSQL_PORT,
    execute,
    load_mysql,
    mysql_dsn,
    mysql_execute,
    mysql_source,
)

ROOT = Path(__file__).resolve().parents[2]
ORDERS = """
create table {name} (
    id int primary key,
    amount int not null,
    note varchar(40),
    updated_at timestamp(6) not null default current_timestamp(6)
        on update current_timestamp(6)
)
"""


def orders(name: str, **settings: object) -> TableConfig:
    return TableConfig(
        name=name,
        mode="incremental",
        cursor="updated_at",
        primary_key=("id",),
        **settings,  # type: ignore[arg-type]
    )


def _connect(database: str, user: str = MYSQL_ADMIN, password: str = "") -> Any:
    import MySQLdb

    return MySQLdb.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user=user, password=password, database=database
    )


def _live(warehouse: str, table: str) -> list[tuple]:
    return execute(
        warehouse,
        f"select id, amount from raw_shop.{table} where _deleted_at is null order by id",
    )


def _source_rows(database: str, table: str) -> list[tuple]:
    return [
        tuple(row) for row in mysql_execute(database, f"select id, amount from {table} order by id")
    ]


def test_incremental_loads_merge_updates_and_detect_deletes(
    mysql_database: str, warehouse_dsn: str
) -> None:
    mysql_execute(
        mysql_database,
        ORDERS.format(name="inc_orders"),
        "insert into inc_orders (id, amount) values (1, 10), (2, 20), (3, 30), (40000, 4)",
    )
    source = mysql_source(mysql_database, orders("inc_orders", detect_deletes=True))
    dsn = mysql_dsn(mysql_database)
    first = load_mysql(source, dsn, warehouse_dsn)["inc_orders"]
    assert (first.status, first.inserted, first.late_commit_safety) == ("succeeded", 4, "proven")
    mysql_execute(
        mysql_database,
        "update inc_orders set amount = 21 where id = 2",
        "insert into inc_orders (id, amount) values (5, 50)",
        "delete from inc_orders where id in (3, 40000)",
    )
    second = load_mysql(source, dsn, warehouse_dsn)["inc_orders"]
    raise_on_failure([second])
    assert (second.updated, second.deleted) == (1, 2)
    assert _live(warehouse_dsn, "inc_orders") == _source_rows(mysql_database, "inc_orders")
    assert execute(
        warehouse_dsn, "select id from raw_shop.inc_orders where _deleted_at is not null"
    ) == [(3,), (40000,)]
    # nothing changed: nothing merged, nothing marked
    third = load_mysql(source, dsn, warehouse_dsn)["inc_orders"]
    assert (third.inserted, third.updated, third.deleted) == (0, 0, 0)


def test_a_bulk_table_without_a_key_is_replaced_when_it_changes(
    mysql_database: str, warehouse_dsn: str
) -> None:
    mysql_execute(
        mysql_database,
        "create table events (kind varchar(10), n int)",
        "insert into events values ('a', 1), ('a', 1), ('b', 2)",
    )
    # no source_schema: the database the URL names
    source = dataclasses.replace(
        mysql_source(mysql_database, TableConfig(name="events", mode="bulk")), source_schema=""
    )
    dsn = mysql_dsn(mysql_database)
    raise_on_failure(list(load_mysql(source, dsn, warehouse_dsn).values()))
    mysql_execute(mysql_database, "delete from events where kind = 'b'")
    raise_on_failure(list(load_mysql(source, dsn, warehouse_dsn).values()))
    assert execute(
        warehouse_dsn,
        "select kind, n from raw_shop.events where _deleted_at is null order by 1",
    ) == [("a", 1), ("a", 1)]


def _late_commit(database: str, warehouse: str, table: str, **settings: object) -> list[tuple]:
    """A writer's transaction stamps a row, stays open while a later row commits and
    a load runs, then commits; a second load follows. Returns the loaded ids."""
    mysql_execute(database, ORDERS.format(name=table))
    source = mysql_source(database, orders(table, **settings))
    dsn = mysql_dsn(database)
    late = _connect(database)
    try:
        cur = late.cursor()
        cur.execute("begin")
        cur.execute(f"insert into {table} (id, amount) values (1, 1)")  # stamped now
        time.sleep(0.05)
        mysql_execute(database, f"insert into {table} (id, amount) values (2, 2)")  # later stamp
        first = load_mysql(source, dsn, warehouse)[table]
        raise_on_failure([first])
        late.commit()
    finally:
        late.close()
    raise_on_failure(list(load_mysql(source, dsn, warehouse).values()))
    return execute(warehouse, f"select id from raw_shop.{table} order by id")


def test_a_late_commit_below_the_mark_is_loaded(mysql_database: str, warehouse_dsn: str) -> None:
    assert _late_commit(mysql_database, warehouse_dsn, "late_on") == [(1,), (2,)]


def test_without_the_protection_the_same_late_commit_is_lost(
    mysql_database: str, warehouse_dsn: str
) -> None:
    """The test above can fail: with late_commit_protection off, the row is missed."""
    loaded = _late_commit(mysql_database, warehouse_dsn, "late_off", late_commit_protection=False)
    assert loaded == [(2,)]


def test_a_login_without_process_holds_the_mark_and_says_so(
    mysql_database: str, warehouse_dsn: str
) -> None:
    user = f"tw_np_{mysql_database[-8:]}"
    mysql_execute(
        None,
        f"create user '{user}'@'%' identified by 'np-pass'",
        f"grant select on `{mysql_database}`.* to '{user}'@'%'",
    )
    try:
        mysql_execute(mysql_database, ORDERS.format(name="held"))
        mysql_execute(mysql_database, "insert into held (id, amount) values (1, 1)")
        source = mysql_source(mysql_database, orders("held"))
        dsn = mysql_dsn(mysql_database, user, "np-pass")
        result = load_mysql(source, dsn, warehouse_dsn)["held"]
        raise_on_failure([result])
        assert result.late_commit_safety is not None
        assert result.late_commit_safety.startswith("unproven")
        assert "PROCESS" in result.late_commit_safety
        # held: the next read starts from the beginning again, so a late commit is kept
        assert execute(
            warehouse_dsn,
            "select read_from from ops.high_water_marks where table_name = 'held'",
        ) == [(None,)]
        late = _connect(mysql_database)
        try:
            cur = late.cursor()
            cur.execute("begin")
            cur.execute("insert into held (id, amount) values (2, 2)")
            time.sleep(0.05)
            mysql_execute(mysql_database, "insert into held (id, amount) values (3, 3)")
            raise_on_failure(list(load_mysql(source, dsn, warehouse_dsn).values()))
            late.commit()
        finally:
            late.close()
        raise_on_failure(list(load_mysql(source, dsn, warehouse_dsn).values()))
        assert _live(warehouse_dsn, "held") == [(1, 1), (2, 2), (3, 3)]
    finally:
        mysql_execute(None, f"drop user '{user}'@'%'")


@pytest.mark.parametrize(
    "deleting",
    [
        # Without deletes or their detection (which re-reads differing ranges and so
        # would repair a lost row): this variant fails with late_commit_protection off.
        False,
        True,
    ],
    ids=["inserts-updates", "with-deletes"],
)
def test_concurrent_writers_lose_duplicate_and_invent_no_row(
    mysql_database: str, warehouse_dsn: str, deleting: bool
) -> None:
    table = f"busy_{int(deleting)}"
    mysql_execute(mysql_database, ORDERS.format(name=table))
    source = mysql_source(mysql_database, orders(table, detect_deletes=deleting))
    dsn = mysql_dsn(mysql_database)
    stop = threading.Event()
    errors: list[BaseException] = []
    next_id = iter(range(1, 1_000_000))
    lock = threading.Lock()

    def write(seed: int) -> None:
        rng = random.Random(seed)
        conn = _connect(mysql_database)
        try:
            cur = conn.cursor()
            while not stop.is_set():
                cur.execute("begin")
                with lock:
                    ids = [next(next_id) for _ in range(rng.randint(1, 5))]
                cur.executemany(
                    f"insert into {table} (id, amount) values (%s, %s)", [(i, i) for i in ids]
                )
                cur.execute(
                    f"update {table} set amount = amount + 1 where id = %s",
                    (rng.randint(1, ids[0]),),
                )
                if deleting and rng.random() < 0.2:
                    cur.execute(f"delete from {table} where id = %s", (rng.randint(1, ids[0]),))
                time.sleep(rng.random() * 0.05)  # commit late, below others' stamps
                conn.commit()
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    writers = [threading.Thread(target=write, args=(seed,)) for seed in range(4)]
    for writer in writers:
        writer.start()
    deadline = time.monotonic() + 3
    loads = 0
    while time.monotonic() < deadline:
        raise_on_failure(list(load_mysql(source, dsn, warehouse_dsn).values()))
        loads += 1
    stop.set()
    for writer in writers:
        writer.join()
    assert not errors, errors
    raise_on_failure(list(load_mysql(source, dsn, warehouse_dsn).values()))
    assert loads >= 2
    expected = _source_rows(mysql_database, table)
    assert len(expected) > 50
    assert _live(warehouse_dsn, table) == expected
    duplicates = execute(
        warehouse_dsn, f"select id from raw_shop.{table} group by id having count(*) > 1"
    )
    assert duplicates == []


KILL_SCRIPT = """
import sys
from loaders.config import TableConfig
from tests.loaders.conftest import load_mysql, mysql_source
source = mysql_source(sys.argv[1], TableConfig(name="bulky", mode="bulk", primary_key=("id",)))
load_mysql(source, sys.argv[2], sys.argv[3], retries=1)
"""


def test_a_loader_killed_mid_load_leaves_nothing_and_the_rerun_loads_everything(
    mysql_database: str, warehouse_dsn: str
) -> None:
    rows = 300_000
    mysql_execute(
        mysql_database,
        "create table bulky (id int primary key, note varchar(60))",
        f"set session max_recursive_iterations = {rows + 1}",
        "insert into bulky with recursive seq (n) as "
        f"(select 1 union all select n + 1 from seq where n < {rows}) "
        "select n, concat('row ', n, repeat(' x', 20)) from seq",
    )
    dsn = mysql_dsn(mysql_database)
    loader = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, mysql_database, dsn, warehouse_dsn],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        # kill it while its COPY into the warehouse is running
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            copying = execute(
                warehouse_dsn,
                "select count(*) from pg_stat_activity where datname = current_database() "
                "and query ilike 'copy %' and state = 'active'",
            )[0][0]
            if copying:
                break
            assert loader.poll() is None, "the load ended before its COPY was seen"
            time.sleep(0.01)
        else:
            pytest.fail("the loader's COPY never started")
        loader.send_signal(signal.SIGKILL)
        loader.wait(timeout=10)
    finally:
        if loader.poll() is None:
            loader.kill()
    assert loader.returncode == -signal.SIGKILL
    assert not execute(warehouse_dsn, "select to_regclass('raw_shop.bulky')")[0][0]
    source = mysql_source(
        mysql_database, TableConfig(name="bulky", mode="bulk", primary_key=("id",))
    )
    result = load_mysql(source, dsn, warehouse_dsn)["bulky"]
    raise_on_failure([result])
    assert execute(
        warehouse_dsn, "select count(*), count(distinct id), max(id) from raw_shop.bulky"
    ) == [(rows, rows, rows)]


def test_deletes_are_detected_on_a_text_key_hashed_alike_on_both_sides(
    mysql_database: str, warehouse_dsn: str
) -> None:
    """A key that is not one integer is bucketed by an MD5 of its text, which MySQL
    and PostgreSQL must compute alike: otherwise every bucket would differ."""
    mysql_execute(
        mysql_database,
        "create table skus (code varchar(20) primary key, amount int not null, "
        "updated_at timestamp(6) not null default current_timestamp(6) "
        "on update current_timestamp(6))",
        "insert into skus (code, amount) values "
        + ", ".join(f"('sku-{n}', {n})" for n in range(200)),
    )
    source = mysql_source(
        mysql_database,
        TableConfig(
            name="skus",
            mode="incremental",
            cursor="updated_at",
            primary_key=("code",),
            detect_deletes=True,
        ),
    )
    dsn = mysql_dsn(mysql_database)
    raise_on_failure(list(load_mysql(source, dsn, warehouse_dsn).values()))
    time.sleep(1.5)  # then the rows are older than the late-commit bound of a look
    raise_on_failure(list(load_mysql(source, dsn, warehouse_dsn).values()))
    mysql_execute(mysql_database, "delete from skus where code in ('sku-7', 'sku-150')")
    result = load_mysql(source, dsn, warehouse_dsn)["skus"]
    raise_on_failure([result])
    assert result.deleted == 2
    # only the two differing buckets (of 1024) were read again, not all 198 rows
    assert result.reread < 10
    assert execute(
        warehouse_dsn, "select code from raw_shop.skus where _deleted_at is not null order by 1"
    ) == [("sku-150",), ("sku-7",)]


def test_a_table_locked_by_the_application_is_let_go_after_the_lock_timeout(
    mysql_database: str, warehouse_dsn: str
) -> None:
    mysql_execute(
        mysql_database,
        ORDERS.format(name="locked"),
        "insert into locked (id, amount) values (1, 1)",
    )
    source = dataclasses.replace(
        mysql_source(mysql_database, orders("locked")), lock_timeout=timedelta(seconds=1)
    )
    holder = _connect(mysql_database)
    try:
        holder.cursor().execute("lock tables locked write")
        started = time.monotonic()
        result = load_mysql(source, mysql_dsn(mysql_database), warehouse_dsn, retries=2)["locked"]
        waited = time.monotonic() - started
    finally:
        holder.close()
    assert result.status == "failed"
    assert result.error_class == "transient"
    assert result.attempts == 2
    assert "another session holds a lock on the source table" in (result.error or "")
    assert waited < 10
    raise_on_failure(list(load_mysql(source, mysql_dsn(mysql_database), warehouse_dsn).values()))


def test_a_read_longer_than_the_statement_timeout_is_cancelled(
    mysql_database: str, warehouse_dsn: str
) -> None:
    mysql_execute(
        mysql_database,
        "create table quick (id int primary key)",
        "insert into quick values (1), (2)",
        "create view slow as select id, sleep(2) as waited from quick",
    )
    source = dataclasses.replace(
        mysql_source(mysql_database, TableConfig(name="slow", mode="bulk")),
        statement_timeout=timedelta(seconds=1),
    )
    result = load_mysql(source, mysql_dsn(mysql_database), warehouse_dsn, retries=1)["slow"]
    assert result.status == "failed"
    assert "ran longer than 1 s (source_statement_timeout) and was cancelled" in (
        result.error or ""
    )
    assert not execute(warehouse_dsn, "select to_regclass('raw_shop.slow')")[0][0]
