{#-
    Auditing the increment
    ======================

    A full-table test of a mart with millions of rows costs as much as
    building it, every run. After a green, published build, `invoke transform`
    records per tested relation the newest `_loaded_at` that build tested
    (`ops.audit_marks`, see transform/audit.py). On the next run the row-level
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

    - `relationships`: child rows with `_loaded_at` after the child's mark,
      when the parent keeps every key it ever held (below). A child row can
      break the relationship in two ways only: it is new or changed (then its
      `_loaded_at` moved), or its parent key disappeared. A parent that keeps
      every key never loses one: a deletion at the source leaves the row,
      flagged (`_deleted_at`, `is_deleted`), and moves its `_loaded_at`; a
      changed parent keeps its key, and dbt's relationships test reads every
      parent row, deleted or not. So an old child row still finds its parent.
      Which parents keep every key:
        * a source table with a `primary_key` in `meta.tidewater`: the loaders
          merge on it and only ever flag deletions (keyless tables are
          replaced in full, and their rows can vanish);
        * a model that declares `meta: {tidewater: {keeps_every_key: true}}`
          (a staging view one row per raw row, a dimension that flags deleted
          members instead of dropping them).
      Any other parent (a fact that drops deleted rows, like `fct_orders`)
      can lose keys without a trace in what is left, so its children are
      tested in full.

    Singular tests are always tested in full, and so is everything on `dev`
    targets. The snapshot reads only customers changed since its last run
    (`snapshot_changed_since()` below).
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
        or test_name not in ('unique', 'not_null', 'accepted_values', 'relationships') -%}
        {{ return('') }}
    {%- endif -%}
    {%- if test_name == 'relationships' and not parents_keep_every_key(relation) -%}
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

{#-
    True when every relation the current test depends on, other than the tested
    `relation` itself, keeps every key it ever held (see above); false when
    any parent is unknown or may drop keys.
-#}
{% macro parents_keep_every_key(relation) -%}
    {%- set parents = [] -%}
    {%- for unique_id in model.get('depends_on', {}).get('nodes', []) -%}
        {%- set node = graph.nodes.get(unique_id) or graph.sources.get(unique_id) -%}
        {%- if node is none -%}
            {{ return(false) }}
        {%- endif -%}
        {%- set identifier = node.get('alias') or node.get('identifier') or node.get('name') -%}
        {%- if not (node.get('schema') == relation.schema and identifier == relation.identifier) -%}
            {%- do parents.append(node) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if not parents -%}
        {{ return(false) }}
    {%- endif -%}
    {%- for node in parents -%}
        {%- if not node_keeps_every_key(node) -%}
            {{ return(false) }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(true) }}
{%- endmacro %}

{% macro node_keeps_every_key(node) -%}
    {%- set meta = (node.get('config') or {}).get('meta') or node.get('meta') or {} -%}
    {%- set tidewater = meta.get('tidewater') or {} -%}
    {%- if node.get('resource_type') == 'source' -%}
        {{ return((tidewater.get("primary_key") or []) | length > 0) }}
    {%- endif -%}
    {{ return(tidewater.get('keeps_every_key') is sameas true) }}
{%- endmacro %}
