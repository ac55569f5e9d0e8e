{#-
    JSON in the raw tables: jsonb on PostgreSQL, SUPER on Redshift (see
    loaders/redshift.py). Models go through these macros instead of JSON
    operators.
-#}

{#- The value under top-level `key` of a JSON object, as text (null if absent). -#}
{% macro json_extract_text(column, key) -%}
    {{ return(adapter.dispatch('json_extract_text', 'tidewater')(column, key)) }}
{%- endmacro %}

{% macro default__json_extract_text(column, key) -%}
    ({{ column }} ->> '{{ key }}')
{%- endmacro %}

{#-
    Serialised first so strings and numbers alike come back as text (a cast
    of a SUPER number to varchar gives null). json_extract_path_text returns
    '' for a missing key, hence the nullif; its third argument makes invalid
    JSON yield null instead of an error.
-#}
{% macro redshift__json_extract_text(column, key) -%}
    nullif(json_extract_path_text(json_serialize({{ column }}), '{{ key }}', true), '')
{%- endmacro %}

{#- A JSON column as text, so marts carry one portable type. -#}
{% macro json_as_text(column) -%}
    {{ return(adapter.dispatch('json_as_text', 'tidewater')(column)) }}
{%- endmacro %}

{% macro default__json_as_text(column) -%}
    cast({{ column }} as {{ dbt.type_string() }})
{%- endmacro %}

{#- json_serialize gives varchar(65535); a cast to `text` would be varchar(256). -#}
{% macro redshift__json_as_text(column) -%}
    json_serialize({{ column }})
{%- endmacro %}
