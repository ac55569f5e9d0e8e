{#-
    Auditing the increment
    ======================

    A full-table test of a mart with millions of rows costs as much as
    building it, every run. After a green, published build, `invoke transform`
    records per tested relation the newest `_loaded_at` that build tested
    (`ops.audit_marks`, see tidewater/audit.py). On the next run the row-level
    generic tests read only what is newer:

    - `not_null` and `accepted_values`: rows with `_loaded_at` after the mark;
    - `unique`: every row whose key appears among those rows, so a new row
      that repeats an old key still fails.

    This is sound for the same reason incremental models are: a row's
    `_loaded_at` is the newest `_loaded_at` of every raw row it was computed
    from, so a row at or below the mark was computed from inputs the last
    audit saw, by the same code, and is the row that audit passed. The marks
    are dropped, and everything is tested in full, whenever that could fail:
    on `--full-refresh`, and when any file of the dbt project (or dbt's
    version) changed since they were recorded. On PostgreSQL no load commits a
    row below a mark after a build read raw (tidewater.lock.raw_settled);
    elsewhere the lookback window is subtracted.

    Relationships, singular tests and snapshots are always tested in full
    (a parent that disappears breaks children that did not change), and so is
    everything on `dev` targets.
-#}

{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- set increment = audit_increment_condition(relation) -%}
    {%- set conditions = [] -%}
    {%- if where -%}
        {%- do conditions.append('(' ~ where ~ ')') -%}
    {%- endif -%}
    {%- if increment -%}
        {%- do conditions.append(increment) -%}
    {%- endif -%}
    {%- if not conditions -%}
        {{ return(relation) }}
    {%- endif -%}
    {%- set filtered -%}
        (select * from {{ relation }} where {{ conditions | join(' and ') }}) dbt_subquery
    {%- endset -%}
    {{ return(filtered) }}
{%- endmacro %}

{#- The condition restricting a test to the increment, or '' to test every row. -#}
{% macro audit_increment_condition(relation) -%}
    {%- set metadata = model.get('test_metadata') or {} -%}
    {%- set test_name = metadata.get('name') -%}
    {%- if not execute
        or target.name.startswith('dev')
        or flags.FULL_REFRESH
        or test_name not in ('unique', 'not_null', 'accepted_values') -%}
        {{ return('') }}
    {%- endif -%}
    {%- set marks = adapter.get_relation(
        database=target.database, schema='ops', identifier='audit_marks'
    ) -%}
    {%- if marks is none -%}
        {{ return('') }}
    {%- endif -%}
    {%- set lookup -%}
        select audited_through from {{ marks }}
        where relation_name = '{{ relation.schema }}.{{ relation.identifier }}'
    {%- endset -%}
    {%- set found = run_query(lookup).rows -%}
    {%- if not found or found[0][0] is none -%}
        {{ return('') }}
    {%- endif -%}
    {%- set mark = "cast('" ~ found[0][0] ~ "' as timestamptz)" -%}
    {%- if lookback_minutes() -%}
        {%- set mark = dbt.dateadd('minute', -1 * lookback_minutes(), mark) -%}
    {%- endif -%}
    {%- set since = '_loaded_at > ' ~ mark -%}
    {%- if test_name == 'unique' -%}
        {%- set column = metadata.get('kwargs', {}).get('column_name') -%}
        {{ return(column ~ ' in (select ' ~ column ~ ' from ' ~ relation ~ ' where ' ~ since ~ ')') }}
    {%- endif -%}
    {{ return(since) }}
{%- endmacro %}
