{{
    config(
        dist='all',
        sort='product_id',
    )
}}

-- Small enough to rebuild in full on every run. Products deleted at the source
-- stay with is_deleted = true, like customers.

with

products as (
    select * from {{ ref('stg_app__products') }}
),

final as (
    select
        product_id,
        sku,
        product_name,
        category,
        unit_price,
        is_active,
        is_deleted,
        created_at,
        updated_at
    from products
)

select * from final
