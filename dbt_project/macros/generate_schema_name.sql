{#-
    Where each layer is built.

    Production-like targets (any target whose name does not start with `dev`)
    build into exactly the custom schema of the folder: `staging`,
    `intermediate`, `marts`, `snapshots`. These are the schemas the roles tool
    grants on and BI tools read.

    Personal targets (`dev`, `dev_alice`, ...) build every layer into the
    target schema itself, e.g. the analyst's sandbox `sandbox_analyst_alice`
    (model names are unique across layers), so an analyst developing a model
    never replaces a production table and needs no right to create schemas.

    Models without a custom schema build into the target schema.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- elif target.name.startswith('dev') -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
