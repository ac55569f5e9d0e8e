"""Which nodes an incremental transform builds: the descendants of the raw tables that
changed since the last green, published build (``source:app.orders+``), and the models
over ``ops`` (the pipeline's run records, new with every run).

Marts the selection leaves out stay published as they are: nothing they read changed
since they were built, so they are still right. Whatever the selection builds reads
them from the live schema, not from their copy in ``marts_build`` (which is a publish
behind; ``dbt_project/macros/ref.sql``).
"""

from __future__ import annotations

from pathlib import Path

from tidewater.manifest import parsed_manifest
from tidewater.paths import DBT_PROJECT_DIR

# The run records change with every run; the models over them are refreshed by every
# build that has something to build, as a full build would.
ALWAYS = ("source:ops+",)


def declared_sources(project_dir: Path = DBT_PROJECT_DIR) -> dict[str, str]:
    """Each source table's relation (``raw_app.orders``) and its dbt name
    (``app.orders``), as dbt parses the project (``schema:`` and ``identifier:``
    rendered, Jinja included)."""
    declared: dict[str, str] = {}
    for source in (parsed_manifest(project_dir).get("sources") or {}).values():
        relation = f"{source['schema']}.{source.get('identifier') or source['name']}"
        declared[relation.lower()] = f"{source['source_name']}.{source['name']}"
    return declared


def changed_source_selectors(
    changed: list[str], declared: dict[str, str] | None = None
) -> list[str] | None:
    """dbt selectors for what depends on the changed raw tables (and the models over
    ``ops``); None when a changed table is not a declared source (then only a full
    build is sure to cover what reads it)."""
    declared = declared_sources() if declared is None else declared
    selectors = []
    for name in changed:
        if name.lower() not in declared:
            return None
        selectors.append(f"source:{declared[name.lower()]}+")
    return [*selectors, *ALWAYS] if selectors else []
