{{
    config(
        dist='all',
        sort='country_code',
    )
}}

with

countries as (
    select * from {{ ref('stg_app__countries') }}
),

final as (
    select
        country_code,
        country_name,
        region
    from countries
)

select * from final
