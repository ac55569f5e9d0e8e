{{
    config(
        materialized='incremental',
        unique_key='order_item_id',
        indexes=[
            {'columns': ['order_item_id'], 'unique': true},
            {'columns': ['_loaded_at']},
        ],
        post_hook="{{ delete_tombstones() }}",
        dist='order_id',
        sort='ordered_at',
    )
}}

with

order_items as {{ not_materialized() }} (
    select * from {{ ref('stg_app__order_items') }}
),

orders as {{ not_materialized() }} (
    select * from {{ ref('int_orders_classified') }}
),

-- An item is rebuilt when its own row or its order's row was loaded since the
-- last run (it carries the order's customer, status and date).
changed_items as (
    select order_item_id from order_items
    where {{ loaded_since_last_run() }}

    union

    select order_items.order_item_id
    from order_items
    inner join orders
        on order_items.order_id = orders.order_id
    where {{ loaded_since_last_run('orders._loaded_at') }}
),

final as (
    select
        order_items.order_item_id,
        order_items.order_id,
        order_items.product_id,
        orders.customer_id,
        orders.order_status,
        orders.is_completed,
        order_items.quantity,
        order_items.unit_price,
        order_items.quantity * order_items.unit_price as line_total,
        orders.ordered_at,
        orders.order_date,
        greatest(order_items._loaded_at, orders._loaded_at) as _loaded_at,
        order_items.is_deleted or orders.is_deleted as _is_deleted
    from order_items
    inner join changed_items
        on order_items.order_item_id = changed_items.order_item_id
    inner join orders
        on order_items.order_id = orders.order_id
)

select * from final
