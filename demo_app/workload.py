"""Live traffic against the demo app: the inserts, updates and deletes a web shop
makes, one transaction per step, with the app's invariants kept:

* ``orders.order_total`` is the sum of ``quantity * unit_price`` of its items;
* an order has at most one ``succeeded`` payment, for its total (a return adds
  a ``refunded`` row, as in the generated history);
* updates go through the ``updated_at`` triggers, so ``updated_at = now()``, the
  start of the writing transaction.

``late_commit`` opens a transaction that writes and then waits: its rows carry
its start time but become visible only when it commits, after rows stamped
later. That is how long transactions make a naive ``updated_at > mark`` loader
lose rows, and what the loader tests reproduce.

Every row a step is about to change is picked with ``for update skip locked``
(or a weaker lock that does not conflict with foreign key checks), so steps
never wait on a late transaction that is still open.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal

from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor
from psycopg2.extras import Json, execute_values

from demo_app.exceptions import InvalidOption, LateTransactionClosed
from demo_app.reference import (
    CATEGORIES,
    COUNTRIES,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    LAST_NAMES,
    PAYMENT_METHODS,
    SEARCH_TERMS,
    slugify,
)
from tidewater.db import connect

COUNT_KEYS: tuple[str, ...] = (
    *(
        f"{table}_{verb}"
        for table in ("customers", "products", "orders", "order_items", "payments", "events")
        for verb in ("inserted", "updated", "deleted")
    ),
    "late_commits",
)
"""Keys of the dict ``simulate`` returns."""

LOCK_TIMEOUT = "5s"
"""A step that would wait longer than this for a lock fails instead of hanging."""

MAX_ID = "select coalesce(max({column}), 0) from {table}"

PICK_ORDER = """
select order_id, order_total
from orders
where status = %(status)s and order_id >= %(start)s
order by status, order_id
limit 1
for update skip locked
"""

PICK_EDITABLE_ORDER = """
select order_id
from orders
where status = 'placed' and order_id >= %(start)s
    and not exists (
        select from payments
        where payments.order_id = orders.order_id and payments.status = 'succeeded'
    )
order by status, order_id
limit 1
for update skip locked
"""

PICK_CUSTOMER = """
select customer_id, country_code
from customers
where customer_id >= %(start)s
order by customer_id
limit 1
"""

PICK_CUSTOMER_TO_EDIT = """
select customer_id
from customers
where customer_id >= %(start)s
order by customer_id
limit 1
for no key update skip locked
"""

PICK_CUSTOMER_WITHOUT_ORDERS = """
select customer_id
from customers
where customer_id >= %(start)s
    and not exists (select from orders where orders.customer_id = customers.customer_id)
order by customer_id
limit 1
for update skip locked
"""

PICK_ACTIVE_PRODUCT = """
select product_id, unit_price
from products
where is_active and product_id >= %(start)s
order by product_id
limit 1
"""

PICK_PRODUCT_TO_EDIT = """
select product_id
from products
where product_id >= %(start)s
order by product_id
limit 1
for no key update skip locked
"""

NEXT_CUSTOMER_ID = "select nextval(pg_get_serial_sequence('public.customers', 'customer_id'))"

INSERT_CUSTOMER = """
insert into customers (
    customer_id, email, full_name, country_code, is_marketing_opt_in, signed_up_at
)
values (%(customer_id)s, %(email)s, %(full_name)s, %(country_code)s, %(opt_in)s, now())
"""

INSERT_ORDER = """
insert into orders (customer_id, status, order_total, shipping_country_code, ordered_at)
values (%(customer_id)s, %(status)s, %(order_total)s, %(country_code)s, now())
returning order_id
"""

INSERT_ORDER_ITEMS = (
    "insert into order_items (order_id, product_id, quantity, unit_price) values %s"
)

INSERT_PAYMENT = """
insert into payments (order_id, payment_method, status, amount, paid_at)
values (
    %(order_id)s, %(method)s, %(status)s, %(amount)s,
    case when %(status)s in ('succeeded', 'refunded') then now() end
)
"""

INSERT_EVENTS = (
    "insert into events (session_id, customer_id, event_type, page_path, properties) values %s"
)

SET_ORDER_STATUS = "update orders set status = %(status)s where order_id = %(order_id)s"

PENDING_PAYMENT = """
select payment_id from payments
where order_id = %(order_id)s and status = 'pending'
order by payment_id
limit 1
for update
"""

SUCCEEDED_PAYMENT_METHOD = """
select payment_method from payments
where order_id = %(order_id)s and status = 'succeeded'
order by payment_id
limit 1
"""

SETTLE_PAYMENT = """
update payments set status = 'succeeded', paid_at = now() where payment_id = %(payment_id)s
"""

FAIL_PAYMENT = "update payments set status = 'failed' where payment_id = %(payment_id)s"

ORDER_ITEMS = """
select order_item_id, quantity from order_items
where order_id = %(order_id)s
order by order_item_id
for update
"""

RECOMPUTE_TOTAL = """
update orders
set order_total = (
    select coalesce(sum(quantity * unit_price), 0) from order_items
    where order_items.order_id = orders.order_id
)
where order_id = %(order_id)s
returning order_total
"""

UPDATE_PENDING_AMOUNT = """
update payments set amount = %(amount)s where order_id = %(order_id)s and status = 'pending'
"""

TOGGLE_MARKETING_OPT_IN = """
update customers set is_marketing_opt_in = not is_marketing_opt_in
where customer_id = %(customer_id)s
"""

CHANGE_LAST_NAME = """
update customers set full_name = split_part(full_name, ' ', 1) || ' ' || %(last_name)s
where customer_id = %(customer_id)s
"""

MOVE_COUNTRY = """
update customers set country_code = %(country_code)s where customer_id = %(customer_id)s
"""

COUNT_ORDER_CHILDREN = """
select
    (select count(*) from order_items where order_id = %(order_id)s),
    (select count(*) from payments where order_id = %(order_id)s)
"""

_METHODS = [method for method, _ in PAYMENT_METHODS]
_METHOD_WEIGHTS = [weight for _, weight in PAYMENT_METHODS]
_COUNTRY_CODES = [code for code, *_ in COUNTRIES]
_COUNTRY_WEIGHTS = [weight for *_, weight in COUNTRIES]
_ADVANCING = ("placed", "paid", "shipped", "delivered")
_ADVANCING_WEIGHTS = (35, 30, 30, 5)
_CATEGORY_SLUGS = [slug for slug, *_ in CATEGORIES.values()]


class Traffic:
    """The app's writes, each a method on one cursor inside the caller's transaction.

    Methods return whether they found something to do; their work is added to
    ``counts`` and the orders they insert or change to ``touched_orders``.
    """

    def __init__(self, cur: Cursor, rng: random.Random, counts: Counter[str]) -> None:
        self.cur = cur
        self.rng = rng
        self.counts = counts
        self.touched_orders: list[int] = []

    def step(self) -> str:
        """One random action (events if the chosen one finds nothing); its name."""
        actions: list[tuple[Callable[[], bool], int]] = [
            (self.add_session, 28),
            (self.new_order, 18),
            (self.advance_order, 20),
            (self.new_customer, 8),
            (self.update_customer, 5),
            (self.update_product, 6),
            (self.edit_order, 5),
            (self.delete_cancelled_order, 7),
            (self.delete_customer_without_orders, 3),
        ]
        action = self.rng.choices([a for a, _ in actions], [w for _, w in actions])[0]
        if action():
            return action.__name__
        self.add_session()
        return "add_session"

    # -- helpers ------------------------------------------------------------

    def _start(self, table: str, column: str) -> int:
        """A random id between 1 and the largest id of ``table``."""
        query = sql.SQL(MAX_ID).format(table=sql.Identifier(table), column=sql.Identifier(column))
        self.cur.execute(query)
        largest = self.cur.fetchone()[0]
        return self.rng.randint(1, largest) if largest else 0

    def _pick(self, query: str, start: int, **params: object) -> tuple | None:
        """The first row at or after ``start``, wrapping around to the lowest ids."""
        self.cur.execute(query, {**params, "start": start})
        row = self.cur.fetchone()
        if row is None and start > 0:
            self.cur.execute(query, {**params, "start": 0})
            row = self.cur.fetchone()
        return row

    def _insert_payment(self, order_id: int, method: str, status: str, amount: Decimal) -> None:
        params = {"order_id": order_id, "method": method, "status": status, "amount": amount}
        self.cur.execute(INSERT_PAYMENT, params)
        self.counts["payments_inserted"] += 1

    def _set_status(self, order_id: int, status: str) -> None:
        self.cur.execute(SET_ORDER_STATUS, {"order_id": order_id, "status": status})
        self.counts["orders_updated"] += 1
        self.touched_orders.append(order_id)

    # -- actions ------------------------------------------------------------

    def add_session(self) -> bool:
        """A browsing session: a few events, a third of them anonymous."""
        rng = self.rng
        customer_id = None
        if rng.random() >= 0.3:
            row = self._pick(PICK_CUSTOMER, self._start("customers", "customer_id"))
            customer_id = row[0] if row else None
        session = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        device = rng.choice(("mobile", "desktop", "tablet"))
        events = [(session, customer_id, "page_view", "/", Json({"device": device}))]
        for _ in range(rng.randint(1, 7)):
            roll = rng.random()
            if roll < 0.7:
                path = f"/category/{rng.choice(_CATEGORY_SLUGS)}"
                events.append((session, customer_id, "page_view", path, Json({"device": device})))
            elif roll < 0.85:
                query = {"query": rng.choice(SEARCH_TERMS), "result_count": rng.randrange(120)}
                events.append((session, customer_id, "search", "/search", Json(query)))
            else:
                product = self._pick(PICK_ACTIVE_PRODUCT, self._start("products", "product_id"))
                if product is None:
                    continue
                added = {"product_id": product[0], "quantity": 1, "unit_price": float(product[1])}
                events.append((session, customer_id, "add_to_cart", "/cart", Json(added)))
        execute_values(self.cur, INSERT_EVENTS, events)
        self.counts["events_inserted"] += len(events)
        return True

    def new_customer(self) -> bool:
        """A sign-up: a customer and a signup event."""
        rng = self.rng
        self.cur.execute(NEXT_CUSTOMER_ID)
        customer_id = self.cur.fetchone()[0]
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        email = f"{slugify(first)}.{slugify(last)}{customer_id}@{rng.choice(EMAIL_DOMAINS)}"
        self.cur.execute(
            INSERT_CUSTOMER,
            {
                "customer_id": customer_id,
                "email": email,
                "full_name": f"{first} {last}",
                "country_code": rng.choices(_COUNTRY_CODES, _COUNTRY_WEIGHTS)[0],
                "opt_in": rng.random() < 0.35,
            },
        )
        session = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        signup = (session, customer_id, "signup", "/signup", Json({"method": "email"}))
        execute_values(self.cur, INSERT_EVENTS, [signup])
        self.counts["customers_inserted"] += 1
        self.counts["events_inserted"] += 1
        return True

    def update_customer(self) -> bool:
        """A profile change: marketing consent, name or country."""
        row = self._pick(PICK_CUSTOMER_TO_EDIT, self._start("customers", "customer_id"))
        if row is None:
            return False
        params: dict[str, object] = {"customer_id": row[0]}
        roll = self.rng.random()
        if roll < 0.6:
            statement = TOGGLE_MARKETING_OPT_IN
        elif roll < 0.8:
            statement = CHANGE_LAST_NAME
            params["last_name"] = self.rng.choice(LAST_NAMES)
        else:
            statement = MOVE_COUNTRY
            params["country_code"] = self.rng.choices(_COUNTRY_CODES, _COUNTRY_WEIGHTS)[0]
        self.cur.execute(statement, params)
        self.counts["customers_updated"] += 1
        return True

    def update_product(self) -> bool:
        """A price change or a product (de)listed."""
        row = self._pick(PICK_PRODUCT_TO_EDIT, self._start("products", "product_id"))
        if row is None:
            return False
        if self.rng.random() < 0.7:
            factor = Decimal(f"{self.rng.uniform(0.85, 1.2):.3f}")
            self.cur.execute(
                "update products set unit_price = round(unit_price * %(factor)s, 2)"
                " where product_id = %(product_id)s",
                {"factor": factor, "product_id": row[0]},
            )
        else:
            self.cur.execute(
                "update products set is_active = not is_active where product_id = %(product_id)s",
                {"product_id": row[0]},
            )
        self.counts["products_updated"] += 1
        return True

    def new_order(self) -> bool:
        """A checkout: an order with items, paid at once, by bank transfer, or later."""
        rng = self.rng
        customer = self._pick(PICK_CUSTOMER, self._start("customers", "customer_id"))
        if customer is None:
            return False
        lines: dict[int, tuple[int, Decimal]] = {}
        wanted = 1
        while wanted < 6 and rng.random() < 0.6:
            wanted += 1
        for _ in range(wanted):
            product = self._pick(PICK_ACTIVE_PRODUCT, self._start("products", "product_id"))
            if product is None:
                return False
            quantity = 1 if rng.random() < 0.8 else rng.randint(2, 4)
            lines[product[0]] = (quantity, product[1])
        total = sum((quantity * price for quantity, price in lines.values()), Decimal("0.00"))
        roll = rng.random()
        method = rng.choices(_METHODS, _METHOD_WEIGHTS)[0]
        paid_now = roll < 0.6 and method != "bank_transfer"
        pending = method == "bank_transfer" and roll < 0.75
        self.cur.execute(
            INSERT_ORDER,
            {
                "customer_id": customer[0],
                "status": "paid" if paid_now else "placed",
                "order_total": total,
                "country_code": customer[1],
            },
        )
        order_id = self.cur.fetchone()[0]
        items = [(order_id, pid, quantity, price) for pid, (quantity, price) in lines.items()]
        execute_values(self.cur, INSERT_ORDER_ITEMS, items)
        self.counts["orders_inserted"] += 1
        self.counts["order_items_inserted"] += len(items)
        self.touched_orders.append(order_id)
        if paid_now:
            if rng.random() < 0.1:
                self._insert_payment(order_id, method, "failed", total)
            self._insert_payment(order_id, method, "succeeded", total)
        elif pending:
            self._insert_payment(order_id, method, "pending", total)
        return True

    def advance_order(self) -> bool:
        """The next step of an order: paid (or cancelled), shipped, delivered, returned."""
        rng = self.rng
        status = rng.choices(_ADVANCING, _ADVANCING_WEIGHTS)[0]
        start = self._start("orders", "order_id")
        for candidate in (status, *(other for other in _ADVANCING if other != status)):
            row = self._pick(PICK_ORDER, start, status=candidate)
            if row is not None:
                status = candidate
                break
        else:
            return False
        order_id, total = row
        if status == "placed":
            self.cur.execute(PENDING_PAYMENT, {"order_id": order_id})
            pending = self.cur.fetchone()
            if rng.random() < 0.2:
                if pending:
                    self.cur.execute(FAIL_PAYMENT, {"payment_id": pending[0]})
                    self.counts["payments_updated"] += 1
                self._set_status(order_id, "cancelled")
            else:
                if pending:
                    self.cur.execute(SETTLE_PAYMENT, {"payment_id": pending[0]})
                    self.counts["payments_updated"] += 1
                else:
                    method = rng.choices(_METHODS[:3], _METHOD_WEIGHTS[:3])[0]
                    if rng.random() < 0.1:
                        self._insert_payment(order_id, method, "failed", total)
                    self._insert_payment(order_id, method, "succeeded", total)
                self._set_status(order_id, "paid")
        elif status == "paid":
            self._set_status(order_id, "shipped")
        elif status == "shipped":
            self._set_status(order_id, "delivered")
        else:
            self.cur.execute(SUCCEEDED_PAYMENT_METHOD, {"order_id": order_id})
            paid = self.cur.fetchone()
            if paid:
                self._insert_payment(order_id, paid[0], "refunded", total)
            self._set_status(order_id, "returned")
        return True

    def edit_order(self) -> bool:
        """A change to an unpaid order: add a line, drop a line or change a quantity."""
        rng = self.rng
        row = self._pick(PICK_EDITABLE_ORDER, self._start("orders", "order_id"))
        if row is None:
            return False
        order_id = row[0]
        self.cur.execute(ORDER_ITEMS, {"order_id": order_id})
        items = self.cur.fetchall()
        roll = rng.random()
        if roll < 0.3 or not items:
            product = self._pick(PICK_ACTIVE_PRODUCT, self._start("products", "product_id"))
            if product is None:
                return False
            self.cur.execute(
                "select 1 from order_items where order_id = %(order_id)s"
                " and product_id = %(product_id)s",
                {"order_id": order_id, "product_id": product[0]},
            )
            if self.cur.fetchone():
                return False
            execute_values(self.cur, INSERT_ORDER_ITEMS, [(order_id, product[0], 1, product[1])])
            self.counts["order_items_inserted"] += 1
        elif roll < 0.6 and len(items) > 1:
            item_id = rng.choice(items)[0]
            self.cur.execute(
                "delete from order_items where order_item_id = %(item_id)s", {"item_id": item_id}
            )
            self.counts["order_items_deleted"] += 1
        else:
            item_id, quantity = rng.choice(items)
            new_quantity = rng.choice([q for q in range(1, 6) if q != quantity])
            self.cur.execute(
                "update order_items set quantity = %(quantity)s where order_item_id = %(item_id)s",
                {"quantity": new_quantity, "item_id": item_id},
            )
            self.counts["order_items_updated"] += 1
        self.cur.execute(RECOMPUTE_TOTAL, {"order_id": order_id})
        total = self.cur.fetchone()[0]
        self.cur.execute(UPDATE_PENDING_AMOUNT, {"order_id": order_id, "amount": total})
        self.counts["payments_updated"] += self.cur.rowcount
        self.counts["orders_updated"] += 1
        self.touched_orders.append(order_id)
        return True

    def delete_cancelled_order(self) -> bool:
        """Housekeeping: a cancelled order deleted with its items and payments."""
        row = self._pick(PICK_ORDER, self._start("orders", "order_id"), status="cancelled")
        if row is None:
            return False
        order_id = row[0]
        self.cur.execute(COUNT_ORDER_CHILDREN, {"order_id": order_id})
        items, payments = self.cur.fetchone()
        self.cur.execute("delete from orders where order_id = %(order_id)s", {"order_id": order_id})
        self.counts["orders_deleted"] += 1
        self.counts["order_items_deleted"] += items
        self.counts["payments_deleted"] += payments
        return True

    def delete_customer_without_orders(self) -> bool:
        """An account closed by a customer who never ordered."""
        start = self._start("customers", "customer_id")
        row = self._pick(PICK_CUSTOMER_WITHOUT_ORDERS, start)
        if row is None:
            return False
        self.cur.execute(
            "delete from customers where customer_id = %(customer_id)s", {"customer_id": row[0]}
        )
        self.counts["customers_deleted"] += 1
        return True


def _open(dsn: str) -> Connection:
    conn = connect(dsn, what="the demo app database", application_name="tidewater-demo-app")
    with conn.cursor() as cur:
        cur.execute("set lock_timeout to %s", (LOCK_TIMEOUT,))
        cur.execute("set search_path to public")
    conn.commit()
    return conn


class LateTransaction:
    """A transaction that writes now and commits when told.

    Its rows carry ``started_at`` (``now()`` of the transaction) in
    ``updated_at`` / ``occurred_at`` but become visible only at ``commit()``:
    after any row committed in between, which has a later timestamp.
    """

    def __init__(self, conn: Connection, rng: random.Random) -> None:
        self._conn = conn
        self._rng = rng
        self.counts: Counter[str] = Counter()
        self.order_ids: list[int] = []
        """Orders this transaction inserted or changed."""
        self.state = "open"
        with conn.cursor() as cur:
            cur.execute("select now()")
            self.started_at: datetime = cur.fetchone()[0]

    @classmethod
    def begin(cls, dsn: str, *, seed: int | None = None) -> LateTransaction:
        """Connect and start the transaction (its clock starts now)."""
        return cls(_open(dsn), random.Random(seed))

    def write(self) -> dict[str, int]:
        """Move an existing order to its next status, insert an order with items (and
        maybe a payment), and append a session of events; all stamped ``started_at``.
        Returns what this call did."""
        if self.state != "open":
            raise LateTransactionClosed(self.state)
        before = Counter(self.counts)
        with self._conn.cursor() as cur:
            traffic = Traffic(cur, self._rng, self.counts)
            traffic.advance_order()  # first, so that it changes a committed order
            traffic.new_order()
            traffic.add_session()
        self.order_ids.extend(traffic.touched_orders)
        return {key: self.counts[key] - before[key] for key in self.counts if self.counts[key]}

    def commit(self) -> None:
        """Make the writes visible, late."""
        if self.state != "open":
            raise LateTransactionClosed(self.state)
        self._conn.commit()
        self.state = "committed"

    def rollback(self) -> None:
        """Discard the writes."""
        if self.state == "open":
            self._conn.rollback()
            self.state = "rolled back"

    def close(self) -> None:
        """Roll back if still open, and disconnect."""
        self.rollback()
        self._conn.close()


@contextmanager
def late_commit(dsn: str, *, seed: int | None = None) -> Iterator[LateTransaction]:
    """A ``LateTransaction``, committed on leaving the block (unless already
    committed), rolled back if the block raises.

    Example::

        with late_commit(dsn) as late:
            late.write()          # rows stamped late.started_at, not yet visible
            simulate(dsn, steps=10)  # rows stamped later, committed first
        # late rows are now visible, with updated_at before the others
    """
    late = LateTransaction.begin(dsn, seed=seed)
    try:
        yield late
        if late.state == "open":
            late.commit()
    finally:
        late.close()


def simulate(
    dsn: str,
    *,
    steps: int = 100,
    seed: int | None = None,
    late_commit_probability: float = 0.0,
    late_commit_delay: int = 3,
    pause: float = 0.0,
) -> dict[str, int]:
    """Mutate the app like live traffic, one committed transaction per step.

    Args:
        dsn: the app database (made by ``create_app``).
        steps: how many transactions to run.
        seed: makes the choices repeatable on the same starting data.
        late_commit_probability: chance that a step is a late transaction
            (see ``LateTransaction.write``), committed only after up to
            ``late_commit_delay`` further steps.
        late_commit_delay: most steps a late transaction stays open.
        pause: seconds to sleep between steps (for a live demo).

    Returns:
        Rows inserted, updated and deleted per table (``COUNT_KEYS``), counting
        only committed work, and how many late transactions committed.
    """
    _check_options(steps, late_commit_probability, late_commit_delay, pause)
    rng = random.Random(seed)
    counts: Counter[str] = Counter(dict.fromkeys(COUNT_KEYS, 0))
    conn = _open(dsn)
    waiting: list[tuple[int, LateTransaction]] = []
    try:
        for step in range(steps):
            if late_commit_probability and rng.random() < late_commit_probability:
                late = LateTransaction.begin(dsn, seed=rng.getrandbits(64))
                waiting.append((step + rng.randint(1, late_commit_delay), late))
                late.write()
            else:
                with conn, conn.cursor() as cur:
                    Traffic(cur, rng, counts).step()
            for due, late in [entry for entry in waiting if entry[0] <= step]:
                _commit_late(late, counts)
                waiting.remove((due, late))
            if pause:
                time.sleep(pause)
        for _, late in waiting:
            _commit_late(late, counts)
        waiting.clear()
    finally:
        for _, late in waiting:
            late.close()
        conn.close()
    return dict(counts)


def _commit_late(late: LateTransaction, counts: Counter[str]) -> None:
    late.commit()
    late.close()
    counts.update(late.counts)
    counts["late_commits"] += 1


def _check_options(steps: int, probability: float, delay: int, pause: float) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InvalidOption("steps", steps, "a whole number >= 0")
    if not 0.0 <= probability <= 1.0:
        raise InvalidOption("late_commit_probability", probability, "between 0 and 1")
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 1:
        raise InvalidOption("late_commit_delay", delay, "a whole number >= 1")
    if not pause >= 0:
        raise InvalidOption("pause", pause, "a number of seconds >= 0")


PAGE_PATHS = ("/", "/products", "/products/{id}", "/cart", "/checkout", "/account", "/search")


def page_views(count: int, *, seed: int | None = None) -> list[dict[str, object]]:
    """Page views as the shop's web front end would post them to the event collector:
    each with an id the client chose (so a retried POST stores it once), the stream, and
    its fields."""
    if count < 0:
        raise InvalidOption("count must be zero or more")
    rng = random.Random(seed)
    views: list[dict[str, object]] = []
    sessions = [
        str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(max(1, count // 8))
    ]
    for _ in range(count):
        path = rng.choice(PAGE_PATHS).replace("{id}", str(rng.randint(1, 200)))
        views.append(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "stream": "page_views",
                "session_id": rng.choice(sessions),
                "page_path": path,
                "referrer": rng.choice(["", "https://search.example/", "https://news.example/"]),
                "viewed_at": datetime.now(UTC).isoformat(),
            }
        )
    return views
