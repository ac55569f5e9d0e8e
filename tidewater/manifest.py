"""The dbt project as dbt itself parses it: ``manifest.json``.

The loaders read their table declarations from the manifest rather than from
the YAML files, so whatever dbt accepts counts: ``.yml`` and ``.yaml`` files,
Jinja such as ``env_var``, and source config set in ``dbt_project.yml``.

Parsing costs dbt's start-up (2 to 3 s), so the manifest is kept under
``<project>/target/tidewater/`` with a digest of everything that can change it
(dbt's version, the project's files, the environment variables they name); a
run with an unchanged project reads the kept one. ``dbt parse`` runs with a
parse-only profile: it never connects, and no secret of the real profile is
needed or written.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from tidewater.exceptions import ProjectParseFailed
from tidewater.paths import DBT_PROJECT_DIR

# What dbt writes or installs inside a project, which is not part of its input.
_NOT_INPUT = frozenset({"target", "dbt_packages", "logs", ".user.yml"})
_ENV_VAR = re.compile(r"""env_var\(\s*['"]([^'"]+)['"]""")
_TEXT_SUFFIXES = frozenset({".yml", ".yaml", ".sql", ".md", ".csv", ".py"})
# dbt's log lines start with a clock time; the error text follows it.
_CLOCK = re.compile(r"^\d\d:\d\d:\d\d\s+")
_ENTRY_DUMP = re.compile(r":\s*\{.*\}\s+-\s+")


def _input_files(project_dir: Path) -> list[Path]:
    return sorted(
        path
        for path in project_dir.rglob("*")
        if path.is_file()
        and path.relative_to(project_dir).parts[0] not in _NOT_INPUT
        and not any(part.startswith(".") for part in path.relative_to(project_dir).parts)
    )


def project_digest(project_dir: Path = DBT_PROJECT_DIR) -> str:
    """A digest of what can change the parsed project: dbt's version, every file of
    the project, and the value of every environment variable it names (hashed,
    never stored)."""
    digest = hashlib.sha256(metadata.version("dbt-core").encode() + b"\0")
    names: set[str] = set()
    for path in _input_files(project_dir):
        content = path.read_bytes()
        digest.update(str(path.relative_to(project_dir)).encode() + b"\0" + content + b"\0")
        if path.suffix in _TEXT_SUFFIXES:
            names.update(_ENV_VAR.findall(content.decode("utf-8", "replace")))
    for name in sorted(names):
        value = os.environ.get(name)
        digest.update(name.encode() + b"=" + (b"\1" + value.encode() if value is not None else b""))
    return digest.hexdigest()


def _profile_name(project_dir: Path) -> str:
    try:
        settings = yaml.safe_load((project_dir / "dbt_project.yml").read_text()) or {}
    except FileNotFoundError:
        raise ProjectParseFailed(
            str(project_dir), "there is no dbt_project.yml (is TIDEWATER_HOME right?)"
        ) from None
    except yaml.YAMLError as exc:
        raise ProjectParseFailed(
            str(project_dir), "dbt_project.yml is not valid YAML: " + " ".join(str(exc).split())
        ) from None
    profile = settings.get("profile") if isinstance(settings, dict) else None
    return str(profile or "default")


def _dbt_executable() -> str:
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


def _first_error(output: str) -> str:
    """One line out of dbt's failure output: what follows its "error" heading."""
    lines = [_CLOCK.sub("", line).strip() for line in output.splitlines()]
    lines = [line for line in lines if line]
    start = next(
        (i for i, line in enumerate(lines) if "error" in line.lower()), max(len(lines) - 3, 0)
    )
    text = " ".join(lines[start : start + 6]) or "dbt parse failed without a message"
    text = text.removeprefix("Encountered an error: ")
    # "Invalid sources config given in F @ sources: {the whole entry} - at path …: why"
    text = _ENTRY_DUMP.sub(": ", text)
    return text if len(text) <= 400 else text[:397] + "..."


def _parse(project_dir: Path, out_dir: Path) -> None:
    """``dbt parse`` into ``out_dir`` with a parse-only profile (no connection)."""
    profile = {
        _profile_name(project_dir): {
            "target": "parse",
            "outputs": {
                "parse": {
                    "type": "postgres",
                    "host": "127.0.0.1",
                    "port": 5432,
                    "user": "parse_only",
                    "password": "",
                    "dbname": "parse_only",
                    "schema": "parse_only",
                    "threads": 1,
                }
            },
        }
    }
    env = dict(os.environ)
    env.update(
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        DBT_USE_COLORS="false",
        DBT_LOG_FORMAT="text",
        DBT_PARTIAL_PARSE="true",
    )
    with tempfile.TemporaryDirectory(prefix="tidewater-parse-") as profiles_dir:
        (Path(profiles_dir) / "profiles.yml").write_text(yaml.safe_dump(profile))
        result = subprocess.run(
            [
                _dbt_executable(),
                "parse",
                "--project-dir",
                str(project_dir),
                "--profiles-dir",
                profiles_dir,
                "--target-path",
                str(out_dir),
                "--log-path",
                str(out_dir),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode:
        raise ProjectParseFailed(str(project_dir), _first_error(result.stdout + result.stderr))


def parsed_manifest(project_dir: Path = DBT_PROJECT_DIR) -> dict[str, Any]:
    """dbt's ``manifest.json`` for the project as it is now (parsed only when it
    changed since the kept one).

    Raises:
        ProjectParseFailed: dbt rejects the project; the message is dbt's, in one line.
    """
    out_dir = project_dir / "target" / "tidewater"
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path, digest_path = out_dir / "manifest.json", out_dir / "project.digest"
    # One parse at a time per project; readers wait rather than read a half-written file.
    with open(out_dir / "parse.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        digest = project_digest(project_dir)
        kept = digest_path.read_text() if digest_path.exists() else None
        if kept != digest or not manifest_path.exists():
            digest_path.unlink(missing_ok=True)
            _parse(project_dir, out_dir)
            digest_path.write_text(digest)
        return json.loads(manifest_path.read_text())
