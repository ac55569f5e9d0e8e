"""`invoke docs` says where the page is, and `invoke docs --serve` serves it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import ROOT, Project


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_docs_serve_serves_the_page_it_says_it_wrote(project: Project, tmp_path: Path) -> None:
    if os.environ.get("TIDEWATER_TEST_DSN"):
        project.invoke("roles", "--apply")
    project.invoke("load", "--table", "countries")  # the warehouse and its ETL user exist
    port = free_port()
    log = tmp_path / "docs.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "invoke"), "docs", "--serve", "--port", str(port)],
            cwd=ROOT,
            env=project.env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        page = ""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as r:
                    page = r.read().decode()
                break
            except OSError:
                time.sleep(1)
        output = log.read_text()
        assert "<html" in page.lower() and "dbt" in page.lower(), output[-3000:]
        assert f"serving {ROOT / 'dbt_project' / 'target' / 'index.html'}" in output
        assert f"http://127.0.0.1:{port}" in output
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
