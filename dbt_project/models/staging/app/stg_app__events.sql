with

source as (
    select * from {{ source('app', 'events') }}
),

renamed as (
    select
        event_id,
        cast(session_id as {{ dbt.type_string() }}) as session_id,
        customer_id,
        event_type,
        page_path,
        {{ json_as_text('properties') }} as properties,
        {{ to_utc('occurred_at') }} as occurred_at,
        _deleted_at is not null as is_deleted,
        _loaded_at
    from source
)

select * from renamed
