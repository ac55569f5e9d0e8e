{{
    config(
        materialized='incremental',
        unique_key='order_id',
        indexes=[
            {'columns': ['order_id'], 'unique': true},
            {'columns': ['_loaded_at']},
        ],
        post_hook="{{ delete_tombstones() }}",
        dist='order_id',
        sort='ordered_at',
    )
}}

with

orders as {{ not_materialized() }} (
    select * from {{ ref('int_orders_classified') }}
),

order_items as {{ not_materialized() }} (
    select * from {{ ref('stg_app__order_items') }}
),

payments as {{ not_materialized() }} (
    select * from {{ ref('stg_app__payments') }}
),

-- An order is rebuilt when its own row, or any of its items or payments, was
-- loaded since the last run. Deleted rows count too, so removals propagate.
changed_orders as (
    select order_id from orders
    where {{ loaded_since_last_run() }}

    union

    select order_id from order_items
    where {{ loaded_since_last_run() }}

    union

    select order_id from payments
    where {{ loaded_since_last_run() }}
),

item_summaries as (
    select
        order_items.order_id,
        count(
            case when not order_items.is_deleted then order_items.order_item_id end
        ) as item_count,
        sum(
            case when not order_items.is_deleted then order_items.quantity else 0 end
        ) as unit_count,
        sum(
            case
                when not order_items.is_deleted
                    then order_items.quantity * order_items.unit_price
                else 0
            end
        ) as items_total,
        max(order_items._loaded_at) as _loaded_at
    from order_items
    inner join changed_orders
        on order_items.order_id = changed_orders.order_id
    group by order_items.order_id
),

payment_summaries as (
    select
        payments.order_id,
        count(
            case when not payments.is_deleted then payments.payment_id end
        ) as payment_count,
        sum(
            case
                when not payments.is_deleted and payments.payment_status = 'succeeded'
                    then payments.amount
                else 0
            end
        ) as amount_paid,
        sum(
            case
                when not payments.is_deleted and payments.payment_status = 'refunded'
                    then payments.amount
                else 0
            end
        ) as amount_refunded,
        max(
            case
                when not payments.is_deleted and payments.payment_status = 'succeeded'
                    then payments.paid_at
            end
        ) as last_paid_at,
        max(payments._loaded_at) as _loaded_at
    from payments
    inner join changed_orders
        on payments.order_id = changed_orders.order_id
    group by payments.order_id
),

final as (
    select
        orders.order_id,
        orders.customer_id,
        orders.shipping_country_code,
        orders.order_status,
        orders.is_completed,
        orders.order_total,
        coalesce(item_summaries.items_total, 0) as items_total,
        coalesce(item_summaries.item_count, 0) as item_count,
        coalesce(item_summaries.unit_count, 0) as unit_count,
        coalesce(payment_summaries.payment_count, 0) as payment_count,
        coalesce(payment_summaries.amount_paid, 0) as amount_paid,
        coalesce(payment_summaries.amount_refunded, 0) as amount_refunded,
        coalesce(payment_summaries.amount_paid, 0)
        - coalesce(payment_summaries.amount_refunded, 0) as net_amount_paid,
        coalesce(payment_summaries.amount_paid, 0) >= orders.order_total as is_fully_paid,
        orders.ordered_at,
        orders.order_date,
        payment_summaries.last_paid_at,
        orders.created_at,
        orders.updated_at,
        greatest(
            orders._loaded_at,
            coalesce(item_summaries._loaded_at, orders._loaded_at),
            coalesce(payment_summaries._loaded_at, orders._loaded_at)
        ) as _loaded_at,
        orders.is_deleted as _is_deleted
    from orders
    inner join changed_orders
        on orders.order_id = changed_orders.order_id
    left join item_summaries
        on orders.order_id = item_summaries.order_id
    left join payment_summaries
        on orders.order_id = payment_summaries.order_id
)

select * from final
