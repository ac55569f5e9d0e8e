{#-
    Marts a build leaves out are read where they are published
    ============================================================

    An incremental `invoke transform` builds only what depends on the raw
    tables that changed (transform/selection.py). The marts it leaves out stay
    published in `marts` as they are, and are still right: nothing they read
    changed since they were built. Their copies in `marts_build` are not: each
    is the table a publish swapped out, one or more builds behind. So whatever
    this build runs - a mart over another mart, a relationships test from a
    rebuilt fact to a dimension it left out, a singular test - reads a mart
    that is not selected from its published schema (the mart's own `schema`
    config, `marts`), and a selected mart from `marts_build`, where it is being
    built and tested. A full build selects everything and reads nothing live.
-#}
{% macro ref() -%}
    {%- set version = kwargs.get('version') or kwargs.get('v') -%}
    {%- if varargs | length == 1 -%}
        {%- set relation = builtins.ref(varargs[0], version=version) -%}
    {%- else -%}
        {%- set relation = builtins.ref(varargs[0], varargs[1], version=version) -%}
    {%- endif -%}
    {{ return(published_unless_selected(relation, varargs[-1])) }}
{%- endmacro %}

{% macro published_unless_selected(relation, model_name) -%}
    {%- if not execute or relation is none or not selected_resources
        or relation.schema != var('marts_build_schema') -%}
        {{ return(relation) }}
    {%- endif -%}
    {%- for node in graph.nodes.values() -%}
        {%- if node.resource_type == 'model' and node.name == model_name
            and node.schema == relation.schema
            and node.unique_id not in selected_resources
            and node.config.get('schema') -%}
            {{ return(relation.incorporate(path={'schema': node.config.get('schema')})) }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(relation) }}
{%- endmacro %}
