-- Every live order's total, as recorded by the app, equals the sum of its
-- lines. Returns the orders where it does not.

with

orders as (
    select * from {{ ref('fct_orders') }}
),

mismatched as (
    select
        order_id,
        order_total,
        items_total
    from orders
    where order_total <> items_total
)

select * from mismatched
