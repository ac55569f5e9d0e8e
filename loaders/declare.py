"""Declare a whole source database in one command: read its catalog and write the
dbt sources YAML the loaders read (``models/staging/<name>/_<name>__sources.yml``).

For each base table (a partitioned table once, as its parent; views only when asked):
``incremental`` on a timestamp the database maintains, with the evidence in a comment
(a BEFORE INSERT/UPDATE trigger whose function assigns ``NEW.<col>``; a ``now()``
default, which proves inserts only and so is used only for append-only tables; a
column merely named ``updated_at`` is marked as a guess), ``bulk`` otherwise; the
primary key from the catalog (none: bulk); ``detect_deletes`` for tables that are
updated in place. Run again, it appends entries for new tables and leaves every
existing line of the file as it was.

    tidewater declare --source shop      # reads TIDEWATER_SOURCE_SHOP_DSN
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from psycopg2.extensions import cursor as Cursor

from loaders.catalog import read_primary_key, read_source_columns
from loaders.config import TABLE_KEYS, load_sources
from loaders.exceptions import DeclarationError
from tidewater.db import connect
from tidewater.paths import DBT_PROJECT_DIR

Kind = Literal["table", "partitioned table", "view", "materialized view"]
KINDS: dict[str, Kind] = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
}
CURSOR_TYPES = frozenset({"timestamp with time zone", "timestamp without time zone"})
# Names people give a column the application sets on every write.
UPDATE_NAMES = ("updated_at", "modified_at", "last_modified_at", "changed_at", "last_updated_at")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_NOW = re.compile(
    r"\b(now\(\)|current_timestamp|localtimestamp|clock_timestamp\(\)|"
    r"statement_timestamp\(\)|transaction_timestamp\(\))",
    re.IGNORECASE,
)
WRAP = 88

# Relations of a schema the loaders can read; partitions are declared through their parent.
RELATIONS = """
select
    relation.relname,
    relation.relkind,
    coalesce(obj_description(relation.oid, 'pg_class'), '') as description
from pg_class as relation
inner join pg_namespace as namespace on namespace.oid = relation.relnamespace
where namespace.nspname = %(schema)s
    and relation.relkind in ('r', 'p', 'v', 'm')
    and not relation.relispartition
order by relation.relname
"""

PARTITIONS = """
select parent.relname, child.relname
from pg_inherits as inheritance
inner join pg_class as parent on parent.oid = inheritance.inhparent
inner join pg_class as child on child.oid = inheritance.inhrelid
inner join pg_namespace as namespace on namespace.oid = parent.relnamespace
where namespace.nspname = %(schema)s and child.relispartition
order by parent.relname, child.relname
"""

COLUMN_DEFAULTS = """
select attribute.attname, pg_get_expr(default_.adbin, default_.adrelid)
from pg_attrdef as default_
inner join pg_attribute as attribute
    on attribute.attrelid = default_.adrelid and attribute.attnum = default_.adnum
inner join pg_class as relation on relation.oid = attribute.attrelid
inner join pg_namespace as namespace on namespace.oid = relation.relnamespace
where namespace.nspname = %(schema)s and relation.relname = %(table)s
    and not attribute.attisdropped
"""

# Row-level BEFORE triggers that always fire (no WHEN, no UPDATE OF column list), with
# their function's source, so the columns they assign can be read from it.
ROW_TRIGGERS = """
select
    trigger_.tgname,
    function_.proname,
    (trigger_.tgtype & 4) <> 0 as on_insert,
    (trigger_.tgtype & 16) <> 0 as on_update,
    encode(trigger_.tgargs, 'escape') as arguments,
    pg_get_functiondef(function_.oid) as function_source
from pg_trigger as trigger_
inner join pg_class as relation on relation.oid = trigger_.tgrelid
inner join pg_namespace as namespace on namespace.oid = relation.relnamespace
inner join pg_proc as function_ on function_.oid = trigger_.tgfoid
where namespace.nspname = %(schema)s and relation.relname = %(table)s
    and not trigger_.tgisinternal
    and trigger_.tgenabled <> 'D'
    and (trigger_.tgtype & 1) <> 0
    and (trigger_.tgtype & 2) <> 0
    and trigger_.tgqual is null
    and trigger_.tgattr::text = ''
order by trigger_.tgname
"""

# Updates and deletes counted since the statistics were last reset (a partitioned
# table's are its partitions'); a standby counts none, so it proves nothing there.
WRITE_STATISTICS = """
with relation as (
    select to_regclass(format('%%I.%%I', %(schema)s, %(table)s)) as oid
)
select
    coalesce(sum(stat.n_tup_upd), 0)::bigint,
    coalesce(sum(stat.n_tup_del), 0)::bigint,
    pg_is_in_recovery()
from pg_stat_user_tables as stat
where stat.relid = (select relation.oid from relation)
    or stat.relid in (
        select tree.relid from relation, pg_partition_tree(relation.oid) as tree
    )
"""


@dataclass(frozen=True)
class Trigger:
    name: str
    function: str
    on_insert: bool
    on_update: bool
    arguments: str
    source: str

    def assigns(self, column: str) -> bool:
        """Whether the trigger sets ``column``: ``NEW.<col> :=`` in its function, or
        contrib's ``moddatetime(<col>)``."""
        if self.function == "moddatetime":
            return column in self.arguments.split("\\000")
        quoted = re.escape(column)
        # an assignment starts a statement; `if new.col = old.col` is a comparison
        pattern = (
            rf'(?:^|;|\bbegin|\bthen|\belse|\bloop)\s*new\s*\.\s*(?:"{quoted}"|{quoted}\b)\s*:?='
        )
        return re.search(pattern, self.source, flags=re.IGNORECASE) is not None

    def describe(self) -> str:
        how = "moddatetime()" if self.function == "moddatetime" else f"function {self.function}"
        return f"trigger {self.name} ({how})"


@dataclass(frozen=True)
class TableDeclaration:
    """What `declare` decided for one relation, and why."""

    name: str
    kind: Kind
    mode: Literal["incremental", "bulk"]
    primary_key: tuple[str, ...] = ()
    cursor: str | None = None
    detect_deletes: bool = False
    why_mode: str = ""
    why_deletes: str = ""
    evidence: str = "none"
    description: str = ""
    partitions: tuple[str, ...] = ()


@dataclass
class DeclareResult:
    path: Path
    added: list[TableDeclaration] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped_views: list[str] = field(default_factory=list)
    created: bool = False


# --- reading the catalog and deciding -------------------------------------------------


def read_relations(cur: Cursor, schema: str) -> list[tuple[str, Kind, str]]:
    cur.execute(RELATIONS, {"schema": schema})
    return [(name, KINDS[kind], description) for name, kind, description in cur.fetchall()]


def read_partitions(cur: Cursor, schema: str) -> dict[str, tuple[str, ...]]:
    cur.execute(PARTITIONS, {"schema": schema})
    partitions: dict[str, list[str]] = {}
    for parent, child in cur.fetchall():
        partitions.setdefault(parent, []).append(child)
    return {parent: tuple(children) for parent, children in partitions.items()}


def read_row_triggers(cur: Cursor, schema: str, table: str) -> tuple[Trigger, ...]:
    cur.execute(ROW_TRIGGERS, {"schema": schema, "table": table})
    return tuple(Trigger(*row) for row in cur.fetchall())


def read_column_defaults(cur: Cursor, schema: str, table: str) -> dict[str, str]:
    cur.execute(COLUMN_DEFAULTS, {"schema": schema, "table": table})
    return dict(cur.fetchall())


def read_write_statistics(cur: Cursor, schema: str, table: str) -> tuple[int, int] | None:
    """(updates, deletes) counted by the server, or None where it counts none (a standby)."""
    cur.execute(WRITE_STATISTICS, {"schema": schema, "table": table})
    updates, deletes, in_recovery = cur.fetchone()
    return None if in_recovery else (int(updates), int(deletes))


def decide_table(
    cur: Cursor, schema: str, name: str, kind: Kind, description: str = ""
) -> TableDeclaration:
    """Mode, cursor, key and delete detection for one relation, with the reasons."""
    base = {"name": name, "kind": kind, "description": description}
    if kind in ("view", "materialized view"):
        return TableDeclaration(
            **base,
            mode="bulk",
            why_mode=f"a {kind}: no primary key and no trigger, so it is read in full each run",
        )
    columns = read_source_columns(cur, schema, name)
    timestamps = [column.name for column in columns if column.warehouse_type in CURSOR_TYPES]
    primary_key = read_primary_key(cur, schema, name)
    triggers = read_row_triggers(cur, schema, name)
    defaults = read_column_defaults(cur, schema, name)
    statistics = read_write_statistics(cur, schema, name)

    def stamped_by(column: str, *, on: Literal["insert", "update"]) -> Trigger | None:
        for trigger in triggers:
            if (trigger.on_insert if on == "insert" else trigger.on_update) and trigger.assigns(
                column
            ):
                return trigger
        return None

    def defaults_to_now(column: str) -> str | None:
        expression = defaults.get(column)
        return expression if expression and _NOW.search(expression) else None

    # 1. A column a trigger sets on every update: the database maintains it.
    maintained: list[tuple[str, Trigger, str]] = []
    for column in timestamps:
        on_update = stamped_by(column, on="update")
        if on_update is None:
            continue
        on_insert = stamped_by(column, on="insert")
        default = defaults_to_now(column)
        if on_insert is not None:
            inserts = (
                "and on insert"
                if on_insert is on_update
                else f"and by {on_insert.describe()} on insert"
            )
        elif default:
            inserts = f"and defaults to {default} on insert"
        else:
            inserts = ""
        maintained.append((column, on_update, inserts))
    maintained.sort(key=lambda item: (item[2] == "", item[0] not in UPDATE_NAMES))

    updated_names = [column for column in timestamps if column in UPDATE_NAMES]
    updates_seen = statistics is not None and statistics[0] > 0
    looks_append_only = not maintained and not updated_names and not updates_seen

    no_key = (
        "no primary key: incremental and delete detection merge by key, so bulk "
        "(the raw table is replaced when the source's contents change)"
    )
    if maintained:
        column, trigger, inserts = maintained[0]
        proof = f"{column} is set by {trigger.describe()} before every update"
        if inserts:
            why = f"incremental: {proof} {inserts}"
            evidence = "trigger"
        else:
            why = (
                f"incremental (guess for inserts): {proof}, but nothing sets it on insert "
                "(no insert trigger, no default); a row inserted with it null is never read"
            )
            evidence = "trigger (update only)"
        if not primary_key:
            return TableDeclaration(
                **base,
                mode="bulk",
                why_mode=f"{no_key}; {proof}: add a primary key to load it incrementally",
                evidence=evidence,
            )
        return TableDeclaration(
            **base,
            mode="incremental",
            cursor=column,
            primary_key=primary_key,
            detect_deletes=True,
            why_mode=why,
            why_deletes="updated in place (a trigger stamps updates): record hard deletes in "
            "_deleted_at",
            evidence=evidence,
        )

    insert_stamped = [
        (column, f"set by {trigger.describe()} on insert")
        for column in timestamps
        if (trigger := stamped_by(column, on="insert")) is not None
    ] + [
        (column, f"defaults to {default}")
        for column in timestamps
        if (default := defaults_to_now(column)) and stamped_by(column, on="insert") is None
    ]
    if statistics is None:
        seen = "the server is a standby, so its statistics count no writes"
    else:
        seen = f"pg_stat_user_tables counts {statistics[0]} updates and {statistics[1]} deletes"

    if insert_stamped and looks_append_only:
        column, how = insert_stamped[0]
        if not primary_key:
            return TableDeclaration(
                **base,
                mode="bulk",
                why_mode=f"{no_key}; {column} {how}",
                evidence="default",
            )
        return TableDeclaration(
            **base,
            mode="incremental",
            cursor=column,
            primary_key=primary_key,
            why_mode=(
                f"incremental: {column} {how}, which proves inserts only; the table looks "
                f"append-only (no update timestamp, {seen}), so new rows are all there is "
                "to read. If its rows are ever updated, set mode: bulk"
            ),
            why_deletes="append-only: no deletes to detect (add detect_deletes: true if rows "
            "are deleted)",
            evidence="default (inserts only)",
        )

    if not primary_key:
        return TableDeclaration(**base, mode="bulk", why_mode=no_key)

    entity_deletes = (
        "updated in place: record hard deletes (a bulk load records them anyway; this keeps "
        "them recorded if you switch to incremental)"
    )
    if updated_names:
        column = updated_names[0]
        default = defaults_to_now(column)
        on_insert = f" (it defaults to {default}, which covers inserts only)" if default else ""
        return TableDeclaration(
            **base,
            mode="incremental",
            cursor=column,
            primary_key=primary_key,
            detect_deletes=True,
            why_mode=(
                f"guess: incremental on {column} by its name alone; no trigger sets it on "
                f"update{on_insert}, so the application must set it on every write or "
                "changes are missed. Add a trigger, or set mode: bulk if unsure"
            ),
            why_deletes="updated in place: record hard deletes in _deleted_at",
            evidence="guess (name)",
        )

    if insert_stamped:
        column, how = insert_stamped[0]
        why = (
            f"bulk: {column} {how}, which proves inserts only, and {seen}: an updated "
            "table needs a timestamp set on update to load incrementally"
        )
    elif timestamps:
        why = (
            f"bulk: no timestamp the database maintains ({', '.join(timestamps)} "
            "set by no trigger and no now() default)"
        )
    else:
        why = "bulk: no timestamp column to read changes by"
    return TableDeclaration(
        **base,
        mode="bulk",
        primary_key=primary_key,
        detect_deletes=True,
        why_mode=why,
        why_deletes=entity_deletes,
    )


def read_catalog(
    cur: Cursor, schema: str, *, views: bool = False
) -> tuple[list[TableDeclaration], list[str]]:
    """Declarations for every table of ``schema`` (and views if asked), and the views
    left out."""
    partitions = read_partitions(cur, schema)
    declared: list[TableDeclaration] = []
    skipped: list[str] = []
    for name, kind, description in read_relations(cur, schema):
        if kind in ("view", "materialized view") and not views:
            skipped.append(name)
            continue
        decision = decide_table(cur, schema, name, kind, description)
        if name in partitions:
            decision = TableDeclaration(
                **{**decision.__dict__, "partitions": partitions[name]}  # type: ignore[arg-type]
            )
        declared.append(decision)
    return declared, skipped


# --- writing the YAML -------------------------------------------------------------------


def _scalar(value: str) -> str:
    """A YAML scalar, quoted only when it must be."""
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10_000).removesuffix("\n...\n").strip()
    )


def _comment(text: str, indent: int) -> list[str]:
    prefix = " " * indent + "# "
    return textwrap.wrap(
        text, width=WRAP, initial_indent=prefix, subsequent_indent=prefix, break_on_hyphens=False
    )


def render_table(table: TableDeclaration) -> list[str]:
    """One entry of ``tables:``, at the indentation the generated file uses."""
    lines = [f"      - name: {_scalar(table.name)}"]
    if table.description:
        lines.append(f"        description: {_scalar(' '.join(table.description.split()))}")
    if table.partitions:
        lines += _comment(
            f"partitioned: read through the parent; its partitions "
            f"({', '.join(table.partitions)}) are not declared on their own",
            8,
        )
    lines += ["        config:", "          meta:", "            tidewater:"]
    lines += _comment(table.why_mode, 14)
    lines.append(f"              mode: {table.mode}")
    if table.cursor:
        lines.append(f"              cursor: {_scalar(table.cursor)}")
    if table.primary_key:
        keys = ", ".join(_scalar(key) for key in table.primary_key)
        lines.append(f"              primary_key: [{keys}]  # the table's primary key")
    if table.why_deletes:
        lines += _comment(table.why_deletes, 14)
    if table.detect_deletes:
        lines.append("              detect_deletes: true")
    if table.mode == "bulk":
        lines += _comment(
            "bulk rewrites only changed rows, so _loaded_at says when data changed, not "
            "when it was read: no freshness check",
            10,
        )
        lines.append("          freshness: null")
    if len(table.primary_key) == 1:
        lines += [
            "        columns:",
            f"          - name: {_scalar(table.primary_key[0])}",
            "            tests: [unique, not_null]",
        ]
    return lines


def render_file(name: str, schema: str, tables: Sequence[TableDeclaration]) -> str:
    keys = "\n#   ".join(textwrap.wrap(", ".join(sorted(TABLE_KEYS)), width=WRAP - 4))
    header = f"""version: 2

# Declared by `invoke declare --source {name}` from the source catalog; edit freely.
# Running it again adds entries for new tables and keeps every line already here, so
# to leave a table out, keep its entry and set `enabled: false` under tidewater (a
# deleted entry comes back). Comments say which evidence each choice rests on.
#
# config.meta.tidewater (per table) takes:
#   {keys}
#   mode           incremental (by cursor, merged by primary_key) | bulk (read in full)
#   cursor         a timestamp the database sets on every write
#   detect_deletes record hard deletes in _deleted_at
#   lag            extra margin re-read below the mark, e.g. "5 minutes"
# See README.md, "Adding a source table".

sources:
  - name: {_scalar(name)}
    schema: raw_{name}
    loader: tidewater
    config:
      loaded_at_field: _loaded_at
      freshness:
        warn_after: {{count: 24, period: hour}}
      meta:
        tidewater:
          source_schema: {_scalar(schema)}
    tables:
"""
    body = "\n\n".join("\n".join(render_table(table)) for table in tables)
    return header + body + "\n"


def _last_content_line(node: yaml.Node) -> int:
    """The 0-based line after which a new sibling of ``node`` can be inserted."""
    if isinstance(node, yaml.ScalarNode) or getattr(node, "flow_style", False):
        end = node.end_mark
        return end.line - 1 if end.column == 0 else end.line
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            children += [key, value]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    return max((_last_content_line(child) for child in children), default=node.start_mark.line)


def append_tables(text: str, path: Path, name: str, tables: Sequence[TableDeclaration]) -> str:
    """``text`` with entries for ``tables`` appended to source ``name``'s ``tables:``;
    every existing line is kept as it is."""
    document = yaml.compose(text)
    where = f"{path}: source {name}"
    sources = None
    if isinstance(document, yaml.MappingNode):
        sources = next((v for k, v in document.value if k.value == "sources"), None)
    source = None
    if isinstance(sources, yaml.SequenceNode):
        for entry in sources.value:
            if isinstance(entry, yaml.MappingNode) and any(
                k.value == "name" and v.value == name for k, v in entry.value
            ):
                source = entry
    if source is None:
        raise DeclarationError(where, "not found in the file; move the file aside to start anew")
    tables_node = next((v for k, v in source.value if k.value == "tables"), None)
    if (
        not isinstance(tables_node, yaml.SequenceNode)
        or tables_node.flow_style
        or not tables_node.value
    ):
        raise DeclarationError(
            where,
            "has no block list `tables:` to add to; add one entry by hand "
            "(`tables:` then `- name: …`) and run again",
        )
    dash_column = tables_node.start_mark.column
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    after = _last_content_line(tables_node.value[-1])
    shift = dash_column - 6
    new: list[str] = []
    for table in tables:
        new.append("\n")
        for line in render_table(table):
            new.append((" " * shift + line if shift >= 0 else line[-shift:]) + "\n")
    return "".join(lines[: after + 1] + new + lines[after + 1 :])


def _table_names(text: str, name: str) -> list[str]:
    document = yaml.safe_load(text) or {}
    for source in document.get("sources") or []:
        if source.get("name") == name:
            return [str(table.get("name")) for table in source.get("tables") or []]
    return []


def _entries(text: str, name: str) -> list[dict]:
    document = yaml.safe_load(text) or {}
    for source in document.get("sources") or []:
        if source.get("name") == name:
            return list(source.get("tables") or [])
    return []


def declare_source(
    dsn: str,
    name: str,
    *,
    schema: str = "public",
    views: bool = False,
    project_dir: Path = DBT_PROJECT_DIR,
    what: str = "the source",
) -> DeclareResult:
    """Write (or extend) the sources YAML for source ``name`` from its catalog.

    Raises:
        DeclarationError: the name is not usable, or the schema has no tables.
        ConnectionFailed: the source cannot be reached.
    """
    if not _NAME.match(name):
        raise DeclarationError(
            "--source",
            f"{name!r} is not a usable source name; use lowercase letters, digits and _ "
            "(it names the schema raw_<name> and the variable TIDEWATER_SOURCE_<NAME>_DSN)",
        )
    existing = {source.name: source for source in load_sources(project_dir)}
    if name in existing and existing[name].declared_in is not None:
        path = existing[name].declared_in
        schema = existing[name].source_schema
    else:
        path = project_dir / "models" / "staging" / name / f"_{name}__sources.yml"
    conn = connect(dsn, what=what, application_name="tidewater-declare")
    try:
        conn.set_session(readonly=True)
        with conn.cursor() as cur:
            tables, skipped = read_catalog(cur, schema, views=views)
        conn.rollback()
    finally:
        conn.close()
    if not tables:
        views_hint = (
            f"; it has {len(skipped)} view(s): add --views to declare them" if skipped else ""
        )
        raise DeclarationError(
            f"source {name}",
            f"no tables in schema {schema!r} ({what}){views_hint}; name another with --schema",
        )
    result = DeclareResult(path=path, skipped_views=skipped)
    if path.exists():
        text = path.read_text()
        declared = set(_table_names(text, name))
        result.kept = [table.name for table in tables if table.name in declared] + sorted(
            declared - {table.name for table in tables}
        )
        result.added = [table for table in tables if table.name not in declared]
        if not result.added:
            return result
        updated = append_tables(text, path, name, result.added)
        old_entries = _entries(text, name)
        if _entries(updated, name)[: len(old_entries)] != old_entries:  # never rewrite an entry
            raise DeclarationError(str(path), "appending would change existing entries")
    else:
        result.added, result.created = tables, True
        updated = render_file(name, schema, tables)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(updated)
    scratch.replace(path)
    load_sources(project_dir)  # what was written must read back as a valid declaration
    return result
