-- Succeeded payments never exceed the order total of a live order (fct_orders
-- holds live orders only). Returns the overpaid orders.

with

orders as (
    select * from {{ ref('fct_orders') }}
),

overpaid as (
    select
        order_id,
        order_total,
        amount_paid
    from orders
    where amount_paid > order_total
)

select * from overpaid
