with

source as (
    select * from {{ source('app', 'customers') }}
),

renamed as (
    select
        customer_id,
        lower(trim(email)) as email,
        trim(full_name) as full_name,
        upper(trim(cast(country_code as {{ dbt.type_string() }}))) as country_code,
        is_marketing_opt_in,
        {{ to_utc('signed_up_at') }} as signed_up_at,
        {{ to_utc('created_at') }} as created_at,
        {{ to_utc('updated_at') }} as updated_at,
        _deleted_at is not null as is_deleted,
        _loaded_at
    from source
)

select * from renamed
