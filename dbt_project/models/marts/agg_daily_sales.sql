{{
    config(
        materialized='incremental',
        unique_key='order_date',
        indexes=[
            {'columns': ['order_date'], 'unique': true},
            {'columns': ['_loaded_at']},
        ],
        post_hook="{{ delete_tombstones() }}",
        dist='all',
        sort='order_date',
    )
}}

-- One row per UTC day with at least one (live) order. A day is recomputed in
-- full when any order placed on it was loaded since the last run; a day whose
-- orders were all deleted becomes a tombstone and is removed.

with

orders as {{ not_materialized() }} (
    select * from {{ ref('int_orders_classified') }}
),

changed_days as (
    select distinct order_date from orders
    where {{ loaded_since_last_run() }}
),

daily_orders as (
    select
        orders.order_date,
        count(case when not orders.is_deleted then orders.order_id end) as order_count,
        count(
            case when not orders.is_deleted and orders.is_completed then orders.order_id end
        ) as completed_order_count,
        count(
            case
                when not orders.is_deleted and orders.order_status = 'cancelled'
                    then orders.order_id
            end
        ) as cancelled_order_count,
        count(
            case
                when not orders.is_deleted and orders.order_status = 'returned'
                    then orders.order_id
            end
        ) as returned_order_count,
        sum(
            case
                when not orders.is_deleted and orders.is_completed then orders.order_total
                else 0
            end
        ) as revenue,
        count(
            distinct case when not orders.is_deleted then orders.customer_id end
        ) as active_customer_count,
        max(orders._loaded_at) as _loaded_at
    from orders
    inner join changed_days
        on orders.order_date = changed_days.order_date
    group by orders.order_date
),

final as (
    select
        order_date,
        order_count,
        completed_order_count,
        cancelled_order_count,
        returned_order_count,
        revenue,
        active_customer_count,
        _loaded_at,
        order_count = 0 as _is_deleted
    from daily_orders
)

select * from final
