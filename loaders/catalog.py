"""Source and warehouse catalogs: which columns exist, with which types, and how
a source type maps to one the warehouse has."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import cursor as Cursor

from loaders.config import SourceConfig, TableConfig
from loaders.exceptions import DeclarationError

# Columns of a relation (table, partitioned table, view, materialized view) in order,
# with the type as the warehouse should see it. Built-in types keep theirs (ranges and
# multiranges included); user-defined types (enums, composites, ranges of user types)
# become text; domains become their base type.
SOURCE_COLUMNS = """
select
    attribute.attname as column_name,
    format_type(attribute.atttypid, attribute.atttypmod) as declared_type,
    case
        when base_type.typtype in ('b', 'r', 'm') and base_type.typcategory <> 'A'
            and base_type.typnamespace = 'pg_catalog'::regnamespace
            then format_type(
                base_type.oid,
                case when column_type.typtype = 'd' then column_type.typtypmod
                    else attribute.atttypmod end
            )
        when base_type.typcategory = 'A' and element_type.typtype in ('b', 'r', 'm')
            and element_type.typnamespace = 'pg_catalog'::regnamespace
            then format_type(
                base_type.oid,
                case when column_type.typtype = 'd' then column_type.typtypmod
                    else attribute.atttypmod end
            )
        when base_type.typcategory = 'A' then 'text[]'
        else 'text'
    end as portable_type,
    base_type.typtype in ('b', 'r', 'm')
        and base_type.typnamespace = 'pg_catalog'::regnamespace as is_builtin
from pg_attribute as attribute
inner join pg_class as relation on relation.oid = attribute.attrelid
inner join pg_namespace as namespace on namespace.oid = relation.relnamespace
inner join pg_type as column_type on column_type.oid = attribute.atttypid
inner join pg_type as base_type
    on base_type.oid = case when column_type.typtype = 'd' then column_type.typbasetype
        else column_type.oid end
left join pg_type as element_type on element_type.oid = base_type.typelem
where namespace.nspname = %(schema)s
    and relation.relname = %(table)s
    and relation.relkind in ('r', 'p', 'v', 'm', 'f')
    and attribute.attnum > 0
    and not attribute.attisdropped
order by attribute.attnum
"""

SOURCE_RELATIONS = """
select relation.relname
from pg_class as relation
inner join pg_namespace as namespace on namespace.oid = relation.relnamespace
where namespace.nspname = %(schema)s and relation.relkind in ('r', 'p', 'v', 'm', 'f')
order by relation.relname
"""

PRIMARY_KEY = """
select attribute.attname
from pg_index as index_
inner join pg_class as relation on relation.oid = index_.indrelid
inner join pg_namespace as namespace on namespace.oid = relation.relnamespace
inner join lateral unnest(index_.indkey) with ordinality as key (attnum, position) on true
inner join pg_attribute as attribute
    on attribute.attrelid = relation.oid and attribute.attnum = key.attnum
where namespace.nspname = %(schema)s and relation.relname = %(table)s and index_.indisprimary
order by key.position
"""

# Column sets the source itself keeps unique: its primary key and unique indexes
# (no predicate, no expressions, columns not null).
UNIQUE_KEYS = """
select array_agg(attribute.attname order by key.position)
from pg_index as index_
inner join pg_class as relation on relation.oid = index_.indrelid
inner join pg_namespace as namespace on namespace.oid = relation.relnamespace
inner join lateral unnest(index_.indkey) with ordinality as key (attnum, position) on true
inner join pg_attribute as attribute
    on attribute.attrelid = relation.oid and attribute.attnum = key.attnum
where namespace.nspname = %(schema)s and relation.relname = %(table)s
    and index_.indisunique and index_.indpred is null and index_.indexprs is null
group by index_.indexrelid
having bool_and(attribute.attnotnull)
"""

# The partitioned tables (at any level) a relation is a partition of.
PARTITION_ANCESTORS = """
select ancestor.relname
from pg_partition_ancestors(cast(%(relation)s as regclass)) as tree
inner join pg_class as ancestor on ancestor.oid = tree.relid
where tree.relid <> cast(%(relation)s as regclass)
"""

XML_PROBE = "select cast('<probe/>' as xml)"

WAREHOUSE_COLUMNS = """
select attribute.attname, format_type(attribute.atttypid, attribute.atttypmod)
from pg_attribute as attribute
inner join pg_class as relation on relation.oid = attribute.attrelid
inner join pg_namespace as namespace on namespace.oid = relation.relnamespace
where namespace.nspname = %(schema)s and relation.relname = %(table)s
    and attribute.attnum > 0 and not attribute.attisdropped
order by attribute.attnum
"""

# Types with no equality operator: compared as text when merging.
NO_EQUALITY = frozenset(
    {"json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle"}
)
METADATA_COLUMNS = ("_loaded_at", "_batch_id", "_deleted_at")

# Whether values of every named type (as `format_type` writes them) can travel in COPY's
# binary format between two servers of one major version: built-in types (arrays of
# them too) with binary send and receive functions, except the OID aliases (reg*: an
# OID of the source names nothing in the warehouse; as text they travel by name).
BINARY_SAFE_TYPES = """
select coalesce(bool_and(
    type_.oid is not null
    and type_.typnamespace = 'pg_catalog'::regnamespace
    and type_.typsend <> 0 and type_.typreceive <> 0 and type_.typname not like 'reg%%'
    and (
        element.oid is null
        or (element.typsend <> 0 and element.typreceive <> 0
            and element.typname not like 'reg%%')
    )
), false)
from unnest(cast(%(types)s as text[])) as named (type_name)
left join pg_type as type_ on type_.oid = to_regtype(named.type_name)
left join pg_type as element on element.oid = type_.typelem and type_.typcategory = 'A'
"""


@dataclass(frozen=True)
class Column:
    """A source column and the type it gets in the warehouse."""

    name: str
    declared_type: str
    warehouse_type: str

    @property
    def cast_to_text(self) -> bool:
        """Whether extraction must cast (user-defined types carried as text)."""
        return self.declared_type != self.warehouse_type

    @property
    def comparable(self) -> bool:
        return self.warehouse_type.split("(")[0] not in NO_EQUALITY


def binary_safe(cur: Cursor, types: Sequence[str]) -> bool:
    """Whether every type in ``types`` travels exactly in COPY's binary format (see
    BINARY_SAFE_TYPES); a name the server does not know makes it False."""
    cur.execute(BINARY_SAFE_TYPES, {"types": list(types)})
    return bool(cur.fetchone()[0])


def read_source_columns(cur: Cursor, schema: str, table: str) -> tuple[Column, ...]:
    cur.execute(SOURCE_COLUMNS, {"schema": schema, "table": table})
    return tuple(Column(name, declared, portable) for name, declared, portable, _ in cur.fetchall())


def read_primary_key(cur: Cursor, schema: str, table: str) -> tuple[str, ...]:
    cur.execute(PRIMARY_KEY, {"schema": schema, "table": table})
    return tuple(row[0] for row in cur.fetchall())


def source_keeps_unique(cur: Cursor, schema: str, table: str, keys: tuple[str, ...]) -> bool:
    """Whether the source guarantees the declared key is unique: a primary key or a
    unique index on some of its columns (views and bare tables guarantee nothing)."""
    if not keys:
        return False
    cur.execute(UNIQUE_KEYS, {"schema": schema, "table": table})
    return any(set(columns) <= set(keys) for (columns,) in cur.fetchall())


def read_warehouse_columns(cur: Cursor, schema: str, table: str) -> dict[str, str]:
    cur.execute(WAREHOUSE_COLUMNS, {"schema": schema, "table": table})
    return dict(cur.fetchall())


def validate_table(cur: Cursor, source: SourceConfig, table: TableConfig) -> tuple[Column, ...]:
    """Check the declaration against the source catalog before anything is written.

    Returns the source columns.
    """
    where = f"{source.name}.{table.name}"
    columns = read_source_columns(cur, source.source_schema, table.name)
    if not columns:
        cur.execute(SOURCE_RELATIONS, {"schema": source.source_schema})
        raise DeclarationError(
            where,
            f"no table or view {table.name!r} in schema {source.source_schema!r} of the source",
            candidates=[row[0] for row in cur.fetchall()],
        )
    names = [column.name for column in columns]
    for key in table.primary_key:
        if key not in names:
            raise DeclarationError(
                where, f"primary_key column {key!r} does not exist", candidates=names
            )
    if table.cursor and table.cursor not in names:
        raise DeclarationError(
            where, f"cursor column {table.cursor!r} does not exist", candidates=names
        )
    return columns


def declared_ancestors(cur: Cursor, source: SourceConfig, table: TableConfig) -> list[str]:
    """The declared tables of the same source that ``table`` is a partition of: its
    rows would be stored twice, once in each raw table."""
    relation = sql.Identifier(source.source_schema, table.name).as_string(cur)
    cur.execute(PARTITION_ANCESTORS, {"relation": relation})
    declared = {other.name for other in source.tables}
    return [name for (name,) in cur.fetchall() if name in declared]


def supports_xml(cur: Cursor) -> bool:
    """Whether the warehouse can hold xml values (a server built without libxml, as the
    embedded one is, has the type but cannot read a single value)."""
    cur.execute("savepoint tidewater_xml_probe")
    try:
        cur.execute(XML_PROBE)
    except psycopg2.errors.FeatureNotSupported:
        cur.execute("rollback to savepoint tidewater_xml_probe")
        return False
    cur.execute("release savepoint tidewater_xml_probe")
    return True


def fit_to_warehouse(
    cur: Cursor, columns: tuple[Column, ...]
) -> tuple[tuple[Column, ...], list[str]]:
    """Columns as this warehouse can hold them, and what was changed: xml becomes text
    where the warehouse has no XML support (as enums become text everywhere)."""
    xml = [c.name for c in columns if c.warehouse_type in ("xml", "xml[]")]
    if not xml or supports_xml(cur):
        return columns, []
    fitted = tuple(
        replace(c, warehouse_type="text" if c.warehouse_type == "xml" else "text[]")
        if c.name in xml
        else c
        for c in columns
    )
    return fitted, [
        f"column(s) {', '.join(xml)} are xml in the source and load as text: the warehouse "
        "has no XML support (built without libxml)"
    ]


_VARCHAR = re.compile(r"^character varying\((\d+)\)$")
_CHAR = re.compile(r"^character\((\d+)\)$")
_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")
_WIDER_INTEGERS = {
    "smallint": {"integer", "bigint", "numeric"},
    "integer": {"bigint", "numeric"},
    "bigint": {"numeric"},
    "real": {"double precision"},
    "timestamp without time zone": {"timestamp with time zone"},
}


def is_widening(old: str, new: str) -> bool:
    """Whether every value of type ``old`` fits losslessly in type ``new``."""
    if old == new:
        return True
    if new in _WIDER_INTEGERS.get(old, set()):
        return True
    if new == "text" and (old.startswith("character") or old == "text"):
        return True
    if new == "character varying" and (_VARCHAR.match(old) or _CHAR.match(old)):
        return True
    old_varchar, new_varchar = _VARCHAR.match(old) or _CHAR.match(old), _VARCHAR.match(new)
    if old_varchar and new_varchar:
        return int(new_varchar.group(1)) >= int(old_varchar.group(1))
    old_numeric = _NUMERIC.match(old)
    if old_numeric and new == "numeric":
        return True
    new_numeric = _NUMERIC.match(new)
    if old_numeric and new_numeric:
        old_p, old_s = int(old_numeric.group(1)), int(old_numeric.group(2))
        new_p, new_s = int(new_numeric.group(1)), int(new_numeric.group(2))
        return new_s >= old_s and new_p - new_s >= old_p - old_s
    if old in {"smallint", "integer", "bigint"} and new_numeric:
        digits = {"smallint": 5, "integer": 10, "bigint": 19}[old]
        return int(new_numeric.group(1)) - int(new_numeric.group(2)) >= digits
    return False
