{% snapshot snap_app__customers %}

{#- `check` rather than `timestamp`: a deletion at the source does not touch
    `updated_at`, and `_loaded_at` also moves on reloads. -#}
{{
    config(
        unique_key='customer_id',
        strategy='check',
        check_cols=[
            'email',
            'full_name',
            'country_code',
            'is_marketing_opt_in',
            'signed_up_at',
            'is_deleted',
        ],
    )
}}

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
