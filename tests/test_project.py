"""The repository's own promises: CI runs the README's commands, the top level stays small, lint passes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = {
    "vitlib",
    "notebooks",
    "Images",
    "tests",
    "bench",
    "environment.yml",
    "pyproject.toml",
    "README.md",
    ".ci",
    ".gitignore",
}


def readme_setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up", 1)[1]
    block = re.search(r"```shell\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_gives_two_setup_commands_and_ci_runs_them():
    install, test = readme_setup_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci, install  # the README's install command, verbatim
    assert ci[-1] == test  # CI ends with the README's test command, verbatim


def test_top_level_is_only_what_the_project_promises():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert {line.split("/")[0] for line in files.splitlines()} <= TOP_LEVEL


@pytest.mark.skipif(shutil.which("ruff") is None, reason="needs ruff (pip install -e '.[dev]')")
def test_ruff_lints_code_and_notebooks():
    done = subprocess.run(["ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
