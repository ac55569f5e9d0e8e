{#-
    Fail unless two schemas hold the same tables with the same rows, e.g. the
    marts of an incremental build and of a `--full-refresh` build into another
    target:

        dbt build --target dev                                   # incremental
        dbt build --target dev_full --full-refresh               # from scratch
        dbt run-operation assert_schemas_equal \
            --args '{left_schema: analytics_marts, right_schema: fullref_marts}'

    Compares every table (not view) of `left_schema` with the table of the same
    name in `right_schema`: row counts, and rows in one but not the other
    (EXCEPT, both ways). Logs one line per table; raises if any differ.
-#}
{% macro assert_schemas_equal(left_schema, right_schema) %}
    {%- set left_tables = _tables_in_schema(left_schema) -%}
    {%- set right_tables = _tables_in_schema(right_schema) -%}
    {%- set failures = [] -%}
    {%- for name in left_tables | sort -%}
        {%- if name not in right_tables -%}
            {%- do failures.append(name ~ ': missing from ' ~ right_schema) -%}
            {%- continue -%}
        {%- endif -%}
        {%- set left = left_tables[name] -%}
        {%- set right = right_tables[name] -%}
        {%- set query -%}
            select
                (select count(*) from {{ left }}) as left_rows,
                (select count(*) from {{ right }}) as right_rows,
                (
                    select count(*) from (
                        select * from {{ left }}
                        {{ dbt.except() }}
                        select * from {{ right }}
                    ) as only_left
                ) as only_left,
                (
                    select count(*) from (
                        select * from {{ right }}
                        {{ dbt.except() }}
                        select * from {{ left }}
                    ) as only_right
                ) as only_right
        {%- endset -%}
        {%- set row = run_query(query).rows[0] -%}
        {%- set same = row[0] == row[1] and row[2] == 0 and row[3] == 0 -%}
        {{ log(
            ('OK   ' if same else 'DIFF ') ~ name ~ ': rows ' ~ row[0] ~ ' vs ' ~ row[1]
            ~ ', only in ' ~ left_schema ~ ' ' ~ row[2] ~ ', only in ' ~ right_schema
            ~ ' ' ~ row[3],
            info=true
        ) }}
        {%- if not same -%}
            {%- do failures.append(name) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- for name in right_tables | sort if name not in left_tables -%}
        {%- do failures.append(name ~ ': missing from ' ~ left_schema) -%}
    {%- endfor -%}
    {%- if not left_tables -%}
        {%- do failures.append('no tables in ' ~ left_schema) -%}
    {%- endif -%}
    {%- if failures -%}
        {{ exceptions.raise_compiler_error(
            left_schema ~ ' and ' ~ right_schema ~ ' differ: ' ~ failures | join(', ')
        ) }}
    {%- endif -%}
{% endmacro %}

{% macro _tables_in_schema(schema) %}
    {%- set query -%}
        select table_name
        from information_schema.tables
        where table_schema = '{{ schema }}' and table_type = 'BASE TABLE'
    {%- endset -%}
    {%- set tables = {} -%}
    {%- for row in run_query(query).rows -%}
        {%- do tables.update({row[0]: api.Relation.create(
            database=target.database, schema=schema, identifier=row[0]
        )}) -%}
    {%- endfor -%}
    {{ return(tables) }}
{% endmacro %}
