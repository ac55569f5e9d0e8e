{{
    config(
        materialized='incremental',
        unique_key='customer_id',
        indexes=[
            {'columns': ['customer_id'], 'unique': true},
            {'columns': ['_loaded_at']},
        ],
        dist='all',
        sort='customer_id',
    )
}}

-- Customers deleted at the source stay in this dimension with is_deleted =
-- true: events (never deleted, no foreign key) and the customer snapshot still
-- refer to them. Their orders are deleted with them at the source, so their
-- order figures drop to zero.

with

customers as {{ not_materialized() }} (
    select * from {{ ref('stg_app__customers') }}
),

countries as {{ not_materialized() }} (
    select * from {{ ref('stg_app__countries') }}
),

orders as {{ not_materialized() }} (
    select * from {{ ref('int_orders_classified') }}
),

-- A customer is rebuilt when their own row, their country or any of their
-- orders was loaded since the last run.
changed_customers as (
    select customer_id from customers
    where {{ loaded_since_last_run() }}

    union

    select customers.customer_id
    from customers
    inner join countries
        on customers.country_code = countries.country_code
    where {{ loaded_since_last_run('countries._loaded_at') }}

    union

    select customer_id from orders
    where {{ loaded_since_last_run() }}
),

order_summaries as (
    select
        orders.customer_id,
        min(case when not orders.is_deleted then orders.ordered_at end) as first_ordered_at,
        max(case when not orders.is_deleted then orders.ordered_at end) as last_ordered_at,
        count(case when not orders.is_deleted then orders.order_id end) as order_count,
        count(
            case when not orders.is_deleted and orders.is_completed then orders.order_id end
        ) as completed_order_count,
        sum(
            case
                when not orders.is_deleted and orders.is_completed then orders.order_total
                else 0
            end
        ) as lifetime_value,
        max(orders._loaded_at) as _loaded_at
    from orders
    inner join changed_customers
        on orders.customer_id = changed_customers.customer_id
    group by orders.customer_id
),

final as (
    select
        customers.customer_id,
        customers.email,
        customers.full_name,
        customers.country_code,
        countries.country_name,
        countries.region,
        customers.is_marketing_opt_in,
        customers.is_deleted,
        coalesce(order_summaries.order_count, 0) as order_count,
        coalesce(order_summaries.completed_order_count, 0) as completed_order_count,
        coalesce(order_summaries.lifetime_value, 0) as lifetime_value,
        order_summaries.first_ordered_at,
        order_summaries.last_ordered_at,
        customers.signed_up_at,
        customers.created_at,
        customers.updated_at,
        greatest(
            customers._loaded_at,
            coalesce(countries._loaded_at, customers._loaded_at),
            coalesce(order_summaries._loaded_at, customers._loaded_at)
        ) as _loaded_at
    from customers
    inner join changed_customers
        on customers.customer_id = changed_customers.customer_id
    left join countries
        on customers.country_code = countries.country_code
    left join order_summaries
        on customers.customer_id = order_summaries.customer_id
)

select * from final
