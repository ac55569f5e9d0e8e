"""The README's newcomer path, as written, in a fresh clone.

The commands come from the README itself (its code blocks, and the inline `cp` of
the analyst steps), so the test fails when the README drifts from what works:
"Two commands" (the invoke part; the venv and pip install are this test's own
venv), "What you then have" (the example queries), "Adding a model" (a copied
profile, the model and its tests as written, the build), and "Declare a whole
database in one command" (on a second database). The clone's embedded server
runs on a non-default port: 54329 is held by this test when free, so the copied
profile must find the port the server remembered.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, query
from tests.loaders.conftest import execute

pytestmark = pytest.mark.slow

DEFAULT_PORT = 54329
# Segments of a README command this test does not run, and why.
SETUP_SEGMENTS = (
    re.compile(r"^python3? -m venv\b"),  # the test runs in this venv
    re.compile(r"^\. \.venv/bin/activate$"),
    re.compile(r"^pip install\b"),
)
NOT_RUN = {
    "invoke test": "the suite this test is part of",
    "invoke lint": "CI runs it on the checkout first (.ci/run); here it would double the time",
}
SECOND_DATABASE = """
create function touch() returns trigger language plpgsql as $$
begin
    NEW.updated_at := now();
    return NEW;
end;
$$;
create table tickets (
    ticket_id integer primary key,
    subject text not null,
    updated_at timestamptz not null default now()
);
create trigger tickets_touch before update on tickets
for each row execute function touch();
create table page_hits (
    hit_id bigserial primary key,
    path text not null,
    hit_at timestamptz not null default now()
);
create table tags (tag text not null);
insert into tickets (ticket_id, subject) values (1, 'login broken'), (2, 'refund');
insert into page_hits (path) select '/p' || n from generate_series(1, 20) as n;
insert into tags values ('a'), ('b');
"""


def section(readme: str, heading: str) -> str:
    """The text under a ``##``/``###`` heading, up to the next heading of that level or above."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", readme, flags=re.M)
    assert match, f"README has no section {heading!r}"
    level = len(match.group(1))
    rest = readme[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.M)
    return rest[: end.start()] if end else rest


def code_blocks(text: str, language: str) -> list[str]:
    return [
        textwrap.dedent(code)
        for lang, code in re.findall(r"^\s*```(\w*)\n(.*?)^\s*```", text, flags=re.S | re.M)
        if lang == language
    ]


def shell_commands(text: str) -> list[str]:
    """Each command line of the section's ``sh`` blocks, without the setup segments."""
    commands = []
    for block in code_blocks(text, "sh"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            segments = [
                segment
                for segment in (part.strip() for part in line.split(" && "))
                if not any(pattern.match(segment) for pattern in SETUP_SEGMENTS)
            ]
            if segments:
                commands.append(" && ".join(segments))
    return commands


def _not_run(command: str) -> bool:
    words = shlex.split(command, comments=True)
    return " ".join(words[:2]) in NOT_RUN


@pytest.fixture
def default_port_taken() -> Iterator[None]:
    """Hold 54329 (when free) so the clone's server must move to another port."""
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", DEFAULT_PORT))
        holder.listen(1)
    except OSError:
        pass  # someone else holds it: the server moves all the same
    try:
        yield
    finally:
        holder.close()


class Clone:
    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.path = path
        self.env = env
        self.log: list[str] = []

    def run(self, command: str, *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", command],
            cwd=self.path,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.log.append(f"$ {command}  -> {result.returncode} ({time.monotonic() - started:.0f} s)")
        if result.returncode != 0:
            raise AssertionError(
                f"README command failed in the fresh clone: {command}\n"
                f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}\n"
                "steps so far:\n" + "\n".join(self.log)
            )
        return result


@pytest.fixture
def clone(tmp_path: Path, default_port_taken: None) -> Iterator[Clone]:
    path = tmp_path / "tidewater"
    subprocess.run(
        ["git", "clone", "--quiet", str(ROOT), str(path)], check=True, capture_output=True
    )
    venv_bin = str(Path(sys.executable).parent)
    # A newcomer's environment: none of this session's tidewater or dbt settings.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TIDEWATER_", "DBT_", "PG", "ANALYST_", "DASHBOARD_"))
        and key not in ("VIRTUAL_ENV", "PYTHONPATH")
    }
    home = tmp_path / "home"
    home.mkdir()
    env.update(
        HOME=str(home),
        PATH=venv_bin + os.pathsep + env.get("PATH", ""),
        VIRTUAL_ENV=str(Path(venv_bin).parent),
        PYTHONPATH=str(path),  # the clone's packages, not this checkout's editable install
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
        TIDEWATER_DEMO_SCALE="0.2",  # a smaller demo app, to keep the test short
    )
    repo = Clone(path, env)
    try:
        yield repo
    finally:
        subprocess.run(
            [sys.executable, "-m", "control", "down"],
            cwd=path,
            env=env,
            capture_output=True,
            timeout=120,
        )


def test_the_readme_newcomer_path_works_as_written(
    clone: Clone, make_database: Callable[[str], str]
) -> None:
    readme = (clone.path / "README.md").read_text()

    # Two commands: the main job.
    two = shell_commands(section(readme, "Two commands"))
    assert two and any("invoke load transform" in command for command in two), two
    for command in two:
        if not _not_run(command):
            clone.run(command)
    port_file = clone.path / ".tidewater" / "pgdata.port"
    port = int(port_file.read_text()) if port_file.exists() else DEFAULT_PORT
    assert port != DEFAULT_PORT, "the clone's server was meant to run on a non-default port"

    # What you then have: the example queries (the block that runs psql).
    queries = shell_commands(
        "\n".join(
            f"```sh\n{block}```"
            for block in code_blocks(section(readme, "What you then have"), "sh")
            if "psql" in block
        )
    )
    assert any(command.startswith("psql") for command in queries), queries
    outputs = [clone.run(command).stdout for command in queries if not _not_run(command)]
    assert "order_status" in "\n".join(outputs)

    # Adding a model: a copied profile, the model and its tests as written, the build.
    analyst = section(readme, "Adding a model (for analysts)")
    copies = [span for span in re.findall(r"`([^`]+)`", analyst) if span.startswith("cp ")]
    assert copies, "the analyst steps no longer say which profile to copy"
    for command in copies:
        clone.run(command)
    model_path = re.search(r"`(dbt_project/models/\S+\.sql)`", analyst)
    properties_path = re.search(r"`(dbt_project/models/\S+\.yml)`", analyst)
    assert model_path and properties_path
    (model_sql,) = code_blocks(analyst, "sql")
    (clone.path / model_path.group(1)).write_text(model_sql)
    properties = clone.path / properties_path.group(1)
    model_yaml = [block for block in code_blocks(analyst, "yaml") if "- name:" in block][-1]
    existing = properties.read_text()
    # the block is an entry of the file's `models:` list: at that list's indentation
    indent = re.search(r"^( *)- name:", existing, flags=re.M).group(1)  # type: ignore[union-attr]
    properties.write_text(existing.rstrip("\n") + "\n" + textwrap.indent(model_yaml, indent))
    steps = shell_commands(analyst)
    assert any("--target dev_" in command for command in steps), steps
    for command in steps:
        if not _not_run(command):
            clone.run(command)
    profile = yaml.safe_load((clone.path / "dbt_project" / "profiles.yml").read_text())
    sandbox = profile["tidewater"]["outputs"]["dev_alice"]["schema"]
    alice = clone.run("invoke dsn --target dev_alice").stdout.strip()
    assert query(alice, f"select count(*) from {sandbox}.fct_refunds")[0][0] > 0

    # Declare a whole database in one command, on a second database.
    second = make_database("newcomer_shop")
    execute(second, SECOND_DATABASE)
    declare = shell_commands(section(readme, "Declare a whole database in one command"))
    assert any(command.startswith("invoke declare") for command in declare), declare
    for command in declare:
        exported = re.fullmatch(r"export (TIDEWATER_SOURCE_(\w+)_DSN)=\S+", command)
        if exported:  # the README's DSN is an example: this test's second database instead
            clone.env[exported.group(1)] = second
            continue
        assert not command.startswith("export "), f"the test cannot supply {command!r}"
        clone.run(command)
    names = re.findall(r"invoke declare --source (\w+)", " ".join(declare))
    (name,) = set(names)
    declared = clone.path / "dbt_project" / "models" / "staging" / name / f"_{name}__sources.yml"
    assert declared.exists()
    warehouse = clone.run("invoke dsn").stdout.strip()
    for table in ("tickets", "page_hits", "tags"):
        assert query(warehouse, f"select count(*) from raw_{name}.{table}") == query(
            second, f"select count(*) from {table}"
        )
    assert query(alice, f"select count(*) from raw_{name}.page_hits") == [(20,)]
    print("\n".join(clone.log))
