with

job_runs as (
    select * from {{ ref('stg_ops__job_runs') }}
),

final as (
    select
        run_id,
        pipeline_run_id,
        job_name,
        status,
        error_class,
        error_message,
        rows_loaded,
        duration_s,
        started_at,
        finished_at,
        host,
        code_revision,
        status = 'succeeded' as is_succeeded,
        {{ dbt.date_trunc('day', 'started_at') }} as started_on
    from job_runs
)

select * from final
