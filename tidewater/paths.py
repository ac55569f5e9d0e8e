"""Where the project's files live."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("TIDEWATER_HOME", Path(__file__).resolve().parents[1]))
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
STATE_DIR = PROJECT_ROOT / ".tidewater"
ROLES_SPEC = PROJECT_ROOT / "roles" / "roles.yml"
