with

node_runs as (
    select * from {{ ref('stg_ops__dbt_node_runs') }}
),

final as (
    select
        run_id,
        unique_id,
        resource_type,
        node_name,
        status,
        execution_time_s,
        rows_affected,
        message,
        started_at,
        completed_at
    from node_runs
)

select * from final
