{% snapshot snap_app__customers %}

with

customers as (
    select * from {{ ref('stg_app__customers') }}
),

-- Only customers loaded since the snapshot's last run can have changed
-- (a deletion at the source moves `_loaded_at` too); the others are left
-- alone, as dbt leaves rows missing from a snapshot's query by default.
changed_customers as (
    select * from customers
    where {{ snapshot_changed_since('_loaded_at') }}
)

select * from changed_customers

{% endsnapshot %}
