{#-
    Incremental builds in tidewater
    ===============================

    Every raw row carries `_loaded_at`, set by the loader whenever it inserts,
    changes or marks deleted (`_deleted_at`) a row; deleted rows stay in raw.
    Each incremental mart keeps, per row, the newest `_loaded_at` of all the raw
    rows it was computed from (`_loaded_at` column), and on each run:

    1. finds the keys to rebuild: keys with any contributing raw row loaded
       after `max(_loaded_at)` of the mart minus `var('lookback_minutes')`
       (`loaded_since_last_run()`);
    2. recomputes those keys from the current state of staging; a key that no
       longer exists live (deleted at the source) is written as a tombstone
       with `_is_deleted = true`;
    3. replaces the stored rows of those keys (`delete+insert` on the unique
       key) and then deletes the tombstones in a post-hook
       (`delete_tombstones()`), inside the same transaction.

    A full build runs the same SQL with step 1 selecting every key, so an
    incremental build equals a full refresh. This rests on the loaders moving
    `_loaded_at` on every write (insert, change, deletion, resurrection) and
    on no load committing a row below the mark after a run read raw (a row's
    `_loaded_at` is the start of the transaction that wrote it). On PostgreSQL
    the transform guarantees that: it waits for loads in flight and holds new
    ones off (tidewater.lock.raw_settled). Elsewhere the lookback window must
    exceed the longest load transaction.

    Under the publish gate each mart exists twice, published in `marts` and one
    run behind in `marts_build`; the shadow copy catches up by this same rule.

    Known gap: a row that moves to another parent (an order line to another
    order, an order to another customer or day) is rebuilt under its new
    parent, but the old parent is only corrected by a full refresh. The app
    never moves rows that way.

    On PostgreSQL each incremental mart has a unique index on its key (the
    delete step of delete+insert) and an index on `_loaded_at` (the mark);
    Redshift ignores `indexes` and uses the `dist`/`sort` configs.
-#}

{#-
    A condition on `column` (a `_loaded_at`) selecting the rows to reprocess:
    all of them in a full build or when the mart is empty. The mark is read
    when the model compiles and written into the SQL as a literal: the planner
    then sees from its statistics that few rows qualify and uses the index on
    raw `_loaded_at` and the key indexes (with a scalar subquery it assumes a
    third of the table). Nothing else writes the mart between compiling and
    running it.
-#}
{% macro loaded_since_last_run(column='_loaded_at') -%}
    {%- if is_incremental() -%}
        {{ column }} > {{ incremental_mark() }}
    {%- else -%}
        1 = 1
    {%- endif -%}
{%- endmacro %}

{#- The newest `_loaded_at` this mart holds, minus the lookback, as a literal. -#}
{% macro incremental_mark() -%}
    {%- set newest = none -%}
    {%- if execute -%}
        {%- set newest = run_query('select max(_loaded_at) from ' ~ this).columns[0].values()[0] -%}
    {%- endif -%}
    {%- set mark -%}
        cast('{{ newest if newest is not none else "1900-01-01 00:00:00+00" }}' as timestamptz)
    {%- endset -%}
    {%- if lookback_minutes() -%}
        {%- set mark = dbt.dateadd('minute', -1 * lookback_minutes(), mark) -%}
    {%- endif -%}
    {{ return(mark) }}
{%- endmacro %}

{#- The lookback window in minutes (see `lookback_minutes` in dbt_project.yml). -#}
{% macro lookback_minutes() -%}
    {%- if target.type == 'redshift' -%}
        {{ return(var('lookback_minutes') or var('redshift_lookback_minutes')) }}
    {%- endif -%}
    {{ return(var('lookback_minutes')) }}
{%- endmacro %}

{#- Post-hook of incremental marts: drop the rows written as tombstones. -#}
{% macro delete_tombstones() -%}
    delete from {{ this }} where _is_deleted
{%- endmacro %}

{#-
    Between `as` and `(` of the import CTEs of incremental marts. PostgreSQL
    materialises a CTE that is referenced more than once: every row of the
    staging view, with no index, before the filter on `_loaded_at` or the join
    on the changed keys applies. `not materialized` inlines it, so those
    filters reach the raw tables' indexes. Redshift plans CTEs itself.
-#}
{% macro not_materialized() -%}
    {{ return(adapter.dispatch('not_materialized', 'tidewater')()) }}
{%- endmacro %}

{% macro default__not_materialized() -%}
{%- endmacro %}

{% macro postgres__not_materialized() -%}
    not materialized
{%- endmacro %}
