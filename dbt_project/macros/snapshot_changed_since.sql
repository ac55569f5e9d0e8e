{#-
    The snapshot reads only what changed
    ====================================

    A `check` snapshot compares every row of its query with the current
    versions. Comparing every customer on every run costs as much as the
    first snapshot. A row that did not change since the last run cannot yield
    a new version, and every write the loaders make (insert, change, deletion
    recorded in `_deleted_at`, resurrection) moves the raw row's `_loaded_at`.
    So the snapshot's query keeps only rows with `_loaded_at` after the last
    snapshot run: `max(dbt_updated_at)` of the snapshot (the time of the
    newest run that recorded a version, in UTC; an older mark only re-reads
    more rows). dbt's default `hard_deletes: ignore` leaves the customers the
    query does not return as they are; deletions reach the snapshot as the
    changed `is_deleted` of a row that stays in raw.

    No row can be committed below that mark after the run read raw: on
    PostgreSQL a transform waits for loads in flight and holds new ones off
    (tidewater.lock.raw_settled); elsewhere the lookback window
    (`lookback_minutes`) is subtracted. The first run (no snapshot yet) reads
    every row, and so does `--vars '{snapshot_reads_everything: true}'`.
-#}
{% macro snapshot_changed_since(column='_loaded_at') -%}
    {%- if not execute or var('snapshot_reads_everything', false) -%}
        {{ return('1 = 1') }}
    {%- endif -%}
    {%- set existing = adapter.get_relation(
        database=this.database, schema=this.schema, identifier=this.identifier
    ) -%}
    {%- if existing is none -%}
        {{ return('1 = 1') }}
    {%- endif -%}
    {%- set newest = run_query(
        'select max(dbt_updated_at) from ' ~ existing
    ).columns[0].values()[0] -%}
    {%- if newest is none -%}
        {{ return('1 = 1') }}
    {%- endif -%}
    {#- dbt_updated_at is a UTC wall-clock time (macros/snapshot_get_time.sql). -#}
    {%- set mark = "cast('" ~ newest ~ "+00' as " ~ dbt.type_timestamp() ~ " with time zone)" -%}
    {%- if lookback_minutes() -%}
        {%- set mark = dbt.dateadd('minute', -1 * lookback_minutes(), mark) -%}
    {%- endif -%}
    {{ return(column ~ ' > ' ~ mark) }}
{%- endmacro %}
