{#-
    A `timestamptz` column as a plain `timestamp` in UTC.

    Staging models convert every event timestamp with this macro, so marts hold
    UTC wall-clock times and day boundaries (`date_trunc('day', ...)`) do not
    depend on the session time zone of whoever runs dbt.
-#}
{% macro to_utc(column) -%}
    {{ return(adapter.dispatch('to_utc', 'tidewater')(column)) }}
{%- endmacro %}

{% macro default__to_utc(column) -%}
    cast(({{ column }}) at time zone 'UTC' as {{ dbt.type_timestamp() }})
{%- endmacro %}

{#- convert_timezone also accepts a plain timestamp (taken as UTC already). -#}
{% macro redshift__to_utc(column) -%}
    convert_timezone('UTC', {{ column }})
{%- endmacro %}
