"""Temporary dbt projects for tests that declare sources of their own."""

from __future__ import annotations

from pathlib import Path

DBT_PROJECT_YML = """\
name: tidewater
version: "1.0.0"
profile: tidewater
model-paths: ["models"]
"""


def dbt_project(project_dir: Path, sources: dict[str, str] | None = None) -> Path:
    """A minimal dbt project in ``project_dir`` (created), with each of ``sources``
    (a path under ``models/`` → its YAML) written; returns ``project_dir``."""
    (project_dir / "models").mkdir(parents=True, exist_ok=True)
    (project_dir / "dbt_project.yml").write_text(DBT_PROJECT_YML)
    for relative, text in (sources or {}).items():
        path = project_dir / "models" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return project_dir
