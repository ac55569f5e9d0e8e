with

source as (
    select * from {{ source('app', 'payments') }}
),

renamed as (
    select
        payment_id,
        order_id,
        payment_method,
        status as payment_status,
        amount,
        {{ to_utc('paid_at') }} as paid_at,
        {{ to_utc('created_at') }} as created_at,
        {{ to_utc('updated_at') }} as updated_at,
        _deleted_at is not null as is_deleted,
        _loaded_at
    from source
)

select * from renamed
