-- Orders with the business classifications every mart shares: the UTC day the
-- order was placed and whether it counts as a completed sale. Deleted orders
-- are kept (`is_deleted`) so incremental marts can see removals.

with

orders as (
    select * from {{ ref('stg_app__orders') }}
),

classified as (
    select
        order_id,
        customer_id,
        shipping_country_code,
        order_status,
        order_status in (
            {%- for status in var('completed_order_statuses') %}
                '{{ status }}'{{ ',' if not loop.last }}
            {%- endfor %}
        ) as is_completed,
        order_total,
        ordered_at,
        cast({{ dbt.date_trunc('day', 'ordered_at') }} as date) as order_date,
        created_at,
        updated_at,
        is_deleted,
        _loaded_at
    from orders
)

select * from classified
