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

import yaml

from tidewater.paths import DBT_PROJECT_DIR

# The run records change with every run; the models over them are refreshed by every
# build that has something to build, as a full build would.
ALWAYS = ("source:ops+",)


def declared_sources(project_dir: Path = DBT_PROJECT_DIR) -> dict[str, str]:
    """Each declared source table's relation (``raw_app.orders``) and its dbt name
    (``app.orders``), from the project's sources YAML. Names dbt would compute
    (Jinja in ``schema:`` or ``identifier:``) are left out: a table that is left out
    and changed makes the build a full one."""
    project = yaml.safe_load((project_dir / "dbt_project.yml").read_text()) or {}
    declared: dict[str, str] = {}
    for folder in project.get("model-paths", ["models"]):
        for path in sorted((project_dir / folder).rglob("*.yml")):
            document = yaml.safe_load(path.read_text()) or {}
            for source in document.get("sources") or []:
                schema = str(source.get("schema") or source["name"])
                for table in source.get("tables") or []:
                    identifier = str(table.get("identifier") or table["name"])
                    if "{" in schema or "{" in identifier:
                        continue
                    declared[f"{schema}.{identifier}".lower()] = f"{source['name']}.{table['name']}"
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
