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
        {{ json_extract_text('properties', 'device') }} as device,
        {{ json_extract_text('properties', 'browser') }} as browser,
        {{ json_extract_text('properties', 'referrer') }} as referrer,
        {{ json_extract_text('properties', 'query') }} as search_query,
        cast(
            {{ json_extract_text('properties', 'product_id') }} as {{ dbt.type_bigint() }}
        ) as product_id,
        {{ json_as_text('properties') }} as properties,
        {{ to_utc('occurred_at') }} as occurred_at,
        _deleted_at is not null as is_deleted,
        _loaded_at
    from source
)

select * from renamed
