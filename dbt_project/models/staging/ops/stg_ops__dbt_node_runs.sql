with

source as (
    select * from {{ source('ops', 'dbt_node_runs') }}
),

renamed as (
    select
        run_id,
        unique_id,
        resource_type,
        node_name,
        status,
        execution_time_s,
        rows_affected,
        message,
        {{ to_utc('started_at') }} as started_at,
        {{ to_utc('completed_at') }} as completed_at
    from source
)

select * from renamed
