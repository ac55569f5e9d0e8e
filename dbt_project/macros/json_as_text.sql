{#-
    A JSON column (jsonb in the source) as text, so marts carry one portable
    type. Analysts parse it in the BI tool or in their own models.
-#}
{% macro json_as_text(column) -%}
    {{ return(adapter.dispatch('json_as_text', 'tidewater')(column)) }}
{%- endmacro %}

{% macro default__json_as_text(column) -%}
    cast({{ column }} as {{ dbt.type_string() }})
{%- endmacro %}

{#-
    On Redshift `text` means varchar(256), too short for a JSON document, so
    keep the column's own type: the loaders land JSON as varchar. If raw JSON
    is ever landed as SUPER, change this to json_serialize({{ column }}).
-#}
{% macro redshift__json_as_text(column) -%}
    {{ column }}
{%- endmacro %}
