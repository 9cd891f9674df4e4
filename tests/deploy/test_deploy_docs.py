"""docs/deploy.md against the code: every onetap-server command in it parses, every file it installs exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from server.__main__ import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deploy.md").read_text()


def shell_lines() -> list[str]:
    """The commands of the doc's code blocks, continuation lines joined."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", DOC, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


SERVER_COMMANDS = [line for line in shell_lines() if "bin/onetap-server " in line]


def test_the_doc_uses_the_commands_it_should():
    used = {shlex.split(line.split("bin/onetap-server ", 1)[1])[0] for line in SERVER_COMMANDS}
    assert {"provision", "user", "run", "terminal", "backup"} <= used


@pytest.mark.parametrize("line", SERVER_COMMANDS)
def test_every_onetap_server_command_in_the_doc_parses(line):
    command = line.split("bin/onetap-server ", 1)[1].split(" && ")[0]
    build_parser().parse_args(shlex.split(command))  # SystemExit(2) on a wrong option


def test_every_repository_file_the_doc_installs_exists():
    paths = set(re.findall(r"/opt/onetap/src/((?:deploy|docs)/[\w./-]+)", DOC))
    assert paths
    for path in paths:
        assert (ROOT / path).is_file(), path


def test_the_doc_covers_the_life_of_a_deployment():
    headings = {line.lstrip("#").strip() for line in DOC.splitlines() if line.startswith("#")}
    for needed in ("Health and watchdog", "Monitoring", "Rotating the server's broker password",
                   "Replacing a kiosk", "Retiring a terminal", "Backups and restore",
                   "Upgrades and rollback", "Renewing the broker certificate", "A closed network",
                   "Dashboard users"):
        assert any(needed in heading for heading in headings), needed
    assert "Raspberry Pi OS Lite (64-bit)" in DOC and "bookworm" in DOC
    # The dashboard is logged in to with a user, never the API token.
    assert "log in with the API token" not in DOC.lower()
