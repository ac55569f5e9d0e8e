"""The app's invariants as queries, each counting the rows that break it.

The generator and the workload keep them; tests (and anyone checking a copy
of the app, e.g. after a load) can run them with ``find_violations``.
"""

from __future__ import annotations

from psycopg2.extensions import connection as Connection

INVARIANTS: dict[str, str] = {
    "order_total equals the sum of quantity * unit_price of the order's items": """
        select count(*)
        from orders
        left join (
            select order_id, sum(quantity * unit_price) as items_total
            from order_items
            group by order_id
        ) as items on items.order_id = orders.order_id
        where orders.order_total <> coalesce(items.items_total, 0)
    """,
    "every order has at least one item": """
        select count(*) from orders
        where not exists (select from order_items where order_items.order_id = orders.order_id)
    """,
    "succeeded payments never exceed the order total": """
        select count(*)
        from orders
        inner join (
            select order_id, sum(amount) as paid, count(*) as payments
            from payments
            where status = 'succeeded'
            group by order_id
        ) as succeeded on succeeded.order_id = orders.order_id
        where succeeded.paid > orders.order_total or succeeded.payments > 1
    """,
    "paid, shipped, delivered and returned orders have a succeeded payment for the total": """
        select count(*) from orders
        where status in ('paid', 'shipped', 'delivered', 'returned')
            and not exists (
                select from payments
                where payments.order_id = orders.order_id
                    and payments.status = 'succeeded'
                    and payments.amount = orders.order_total
            )
    """,
    "placed and cancelled orders have no succeeded payment": """
        select count(*) from orders
        where status in ('placed', 'cancelled')
            and exists (
                select from payments
                where payments.order_id = orders.order_id and payments.status = 'succeeded'
            )
    """,
    "refunds belong to returned orders and equal the total": """
        select count(*)
        from payments
        inner join orders on orders.order_id = payments.order_id
        where payments.status = 'refunded'
            and (orders.status <> 'returned' or payments.amount <> orders.order_total)
    """,
    "paid_at is set exactly for succeeded and refunded payments": """
        select count(*) from payments
        where (paid_at is not null) <> (status in ('succeeded', 'refunded'))
    """,
    "foreign keys hold": """
        select
            (select count(*) from customers
             where not exists (
                select from countries where countries.country_code = customers.country_code
             ))
            + (select count(*) from orders
               where not exists (
                    select from customers where customers.customer_id = orders.customer_id
               )
               or not exists (
                    select from countries
                    where countries.country_code = orders.shipping_country_code
               ))
            + (select count(*) from order_items
               where not exists (
                    select from orders where orders.order_id = order_items.order_id
               )
               or not exists (
                    select from products where products.product_id = order_items.product_id
               ))
            + (select count(*) from payments
               where not exists (select from orders where orders.order_id = payments.order_id))
    """,
    "updated_at is never before created_at": """
        select
            (select count(*) from customers where updated_at < created_at)
            + (select count(*) from products where updated_at < created_at)
            + (select count(*) from orders where updated_at < created_at)
            + (select count(*) from order_items where updated_at < created_at)
            + (select count(*) from payments where updated_at < created_at)
    """,
}


def find_violations(conn: Connection) -> dict[str, int]:
    """Invariants that do not hold, with how many rows break each (empty: all hold)."""
    broken: dict[str, int] = {}
    with conn.cursor() as cur:
        for name, query in INVARIANTS.items():
            cur.execute(query)
            count = cur.fetchone()[0]
            if count:
                broken[name] = count
    return broken
