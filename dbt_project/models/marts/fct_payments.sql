{{
    config(
        materialized='incremental',
        unique_key='payment_id',
        indexes=[
            {'columns': ['payment_id'], 'unique': true},
            {'columns': ['_loaded_at']},
        ],
        post_hook="{{ delete_tombstones() }}",
        dist='order_id',
        sort='created_at',
    )
}}

with

payments as {{ not_materialized() }} (
    select * from {{ ref('stg_app__payments') }}
),

orders as {{ not_materialized() }} (
    select * from {{ ref('int_orders_classified') }}
),

-- A payment is rebuilt when its own row or its order's row was loaded since
-- the last run (it carries the order's customer, and goes when the order does).
changed_payments as (
    select payment_id from payments
    where {{ loaded_since_last_run() }}

    union

    select payments.payment_id
    from payments
    inner join orders
        on payments.order_id = orders.order_id
    where {{ loaded_since_last_run('orders._loaded_at') }}
),

final as (
    select
        payments.payment_id,
        payments.order_id,
        orders.customer_id,
        payments.payment_method,
        payments.payment_status,
        payments.payment_status = 'succeeded' as is_succeeded,
        payments.amount,
        payments.created_at,
        payments.paid_at,
        cast({{ dbt.date_trunc('day', 'payments.created_at') }} as date) as payment_date,
        greatest(payments._loaded_at, orders._loaded_at) as _loaded_at,
        payments.is_deleted or orders.is_deleted as _is_deleted
    from payments
    inner join changed_payments
        on payments.payment_id = changed_payments.payment_id
    inner join orders
        on payments.order_id = orders.order_id
)

select * from final
