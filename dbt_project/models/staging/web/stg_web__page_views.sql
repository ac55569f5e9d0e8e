with

source as (
    select * from {{ source('web', 'page_views') }}
),

renamed as (
    select
        event_id as page_view_id,
        {{ json_extract_text('payload', 'session_id') }} as session_id,
        {{ json_extract_text('payload', 'page_path') }} as page_path,
        nullif({{ json_extract_text('payload', 'referrer') }}, '') as referrer,
        {{ to_utc(
            'cast(' ~ json_extract_text('payload', 'viewed_at') ~ ' as timestamp with time zone)'
        ) }} as viewed_at,
        {{ to_utc('received_at') }} as received_at,
        _loaded_at
    from source
)

select * from renamed
