with

source as (
    select * from {{ source('app', 'order_items') }}
),

renamed as (
    select
        order_item_id,
        order_id,
        product_id,
        quantity,
        unit_price,
        {{ to_utc('created_at') }} as created_at,
        {{ to_utc('updated_at') }} as updated_at,
        _deleted_at is not null as is_deleted,
        _loaded_at
    from source
)

select * from renamed
