{#-
    Snapshot validity times in UTC, like every other timestamp in the
    warehouse. dbt-postgres uses `now()::timestamp`, which is the session's
    local time; Redshift's getdate() is already UTC.
-#}
{% macro postgres__snapshot_get_time() -%}
    {{ to_utc('now()') }}
{%- endmacro %}
