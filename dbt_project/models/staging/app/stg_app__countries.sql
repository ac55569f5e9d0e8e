with

source as (
    select * from {{ source('app', 'countries') }}
),

renamed as (
    select
        upper(trim(cast(country_code as {{ dbt.type_string() }}))) as country_code,
        country_name,
        region,
        _deleted_at is not null as is_deleted,
        _loaded_at
    from source
)

select * from renamed
