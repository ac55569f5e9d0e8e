with

source as (
    select * from {{ source('ops', 'job_runs') }}
),

renamed as (
    select
        run_id,
        pipeline_run_id,
        job as job_name,
        status,
        error_class,
        error_message,
        rows_loaded,
        duration_s,
        host,
        code_revision,
        {{ to_utc('started_at') }} as started_at,
        {{ to_utc('finished_at') }} as finished_at
    from source
)

select * from renamed
