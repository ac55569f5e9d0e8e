with

table_loads as (
    select * from {{ ref('stg_ops__table_loads') }}
),

final as (
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
        started_at,
        mark_before,
        mark_after,
        {{ dbt.concat(["source_name", "'.'", "table_name"]) }} as source_table,
        rows_inserted + rows_updated + rows_deleted as rows_written
    from table_loads
)

select * from final
