-- The customer snapshot holds exactly one current version (dbt_valid_to is
-- null) per customer. Returns the customers with more.

with

customer_versions as (
    select * from {{ ref('snap_app__customers') }}
),

current_versions as (
    select
        customer_id,
        count(*) as version_count
    from customer_versions
    where dbt_valid_to is null
    group by customer_id
    having count(*) > 1
)

select * from current_versions
