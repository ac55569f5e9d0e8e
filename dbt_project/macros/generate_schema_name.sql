{#-
    Where each layer is built.

    Production-like targets (any target whose name does not start with `dev`)
    build into exactly the custom schema of the folder: `staging`,
    `intermediate`, `snapshots` - except the marts. Marts are built and tested
    in the shadow schema `var('marts_build_schema')` (`marts_build`), and
    `invoke transform` publishes them into `marts` only after `dbt build`
    passed (transform/publish.py), so dashboards never read a mart whose tests
    failed. `invoke docs` sets the variable to `marts`, so the docs name the
    relations BI tools read.

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
    {%- elif custom_schema_name | trim == 'marts' -%}
        {{ var('marts_build_schema') }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
