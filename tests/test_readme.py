"""The README's two commands are the ones CI and newcomers run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(python3 -m venv[^\n]*)\n```", text)


def test_ci_runs_the_readme_test_command_verbatim():
    demo, tests = _commands()[:2]
    assert "onlooker demo" in demo
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci


def test_every_cli_command_is_in_the_user_guide():
    from onlooker.cli.main import cli

    guide = (ROOT / "docs" / "user-guide.md").read_text()
    missing = [name for name in cli.commands if f"onlooker {name}" not in guide]
    assert not missing, f"commands without docs: {missing}"
