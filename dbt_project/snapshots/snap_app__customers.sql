{% snapshot snap_app__customers %}

    {#- `check` rather than `timestamp`: a deletion at the source does not
        touch `updated_at`, and `_loaded_at` also moves on reloads. -#}
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

    -- Only customers loaded since the snapshot's last run can have changed (a
    -- deletion at the source moves `_loaded_at` too); dbt leaves the customers
    -- the query does not return as they are (`hard_deletes: ignore`).
    changed_customers as (
        select
            customer_id,
            email,
            full_name,
            country_code,
            is_marketing_opt_in,
            signed_up_at,
            created_at,
            updated_at,
            is_deleted,
            _loaded_at
        from customers
        where {{ snapshot_changed_since('_loaded_at') }}
    )

    select * from changed_customers

{% endsnapshot %}
