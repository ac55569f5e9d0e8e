with

source as (
    select * from {{ source('ops', 'table_loads') }}
),

renamed as (
    select
        run_id,
        batch_id,
        source_name,
        table_name,
        load_mode,
        status,
        duration_s,
        rows_read,
        rows_inserted,
        rows_updated,
        rows_deleted,
        rows_reread,
        attempts,
        error_class,
        error_message,
        {{ to_utc('started_at') }} as started_at,
        {{ to_utc('mark_before') }} as mark_before,
        {{ to_utc('mark_after') }} as mark_after
    from source
)

select * from renamed
