with

source as (
    select * from {{ source('app', 'products') }}
),

renamed as (
    select
        product_id,
        sku,
        product_name,
        category,
        unit_price,
        is_active,
        {{ to_utc('created_at') }} as created_at,
        {{ to_utc('updated_at') }} as updated_at,
        _deleted_at is not null as is_deleted,
        _loaded_at
    from source
)

select * from renamed
