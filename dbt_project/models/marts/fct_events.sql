{{
    config(
        materialized='incremental',
        unique_key='event_id',
        indexes=[
            {'columns': ['event_id'], 'unique': true},
            {'columns': ['_loaded_at']},
        ],
        post_hook="{{ delete_tombstones() }}",
        dist='even',
        sort='occurred_at',
    )
}}

with

events as {{ not_materialized() }} (
    select * from {{ ref('stg_app__events') }}
),

changed_events as (
    select * from events
    where {{ loaded_since_last_run() }}
),

final as (
    select
        event_id,
        session_id,
        customer_id,
        customer_id is null as is_anonymous,
        event_type,
        page_path,
        device,
        browser,
        referrer,
        search_query,
        product_id,
        properties,
        occurred_at,
        cast({{ dbt.date_trunc('day', 'occurred_at') }} as date) as event_date,
        _loaded_at,
        is_deleted as _is_deleted
    from changed_events
)

select * from final
