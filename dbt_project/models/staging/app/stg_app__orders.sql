with

source as (
    select * from {{ source('app', 'orders') }}
),

renamed as (
    select
        order_id,
        customer_id,
        cast(status as {{ dbt.type_string() }}) as order_status,
        order_total,
        upper(trim(cast(shipping_country_code as {{ dbt.type_string() }})))
            as shipping_country_code,
        {{ to_utc('ordered_at') }} as ordered_at,
        {{ to_utc('created_at') }} as created_at,
        {{ to_utc('updated_at') }} as updated_at,
        _deleted_at is not null as is_deleted,
        _loaded_at
    from source
)

select * from renamed
