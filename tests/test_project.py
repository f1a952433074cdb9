"""The repository's own promises: CI runs the README's commands, the top level stays small, lint
passes, and pyproject.toml and environment.yml declare the same runtime dependencies."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = {
    "vitlib",
    "notebooks",
    "docs",
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


@pytest.mark.skipif(
    importlib.util.find_spec("ruff") is None, reason="needs ruff (pip install -e '.[dev]')"
)
def test_ruff_lints_code_and_notebooks():
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


# conda-forge's name where it differs from the Python package's
CONDA_NAMES = {"torch": "pytorch"}
# environment.yml entries that are tooling, not runtime dependencies of vitlib
CONDA_ONLY = {"python", "pip"}


def pyproject_dependencies(text: str) -> dict[str, str | None]:
    """name (conda's spelling) -> lower bound (``>=``) of pyproject's runtime dependencies."""
    deps = {}
    for line in tomllib.loads(text)["project"]["dependencies"]:
        req = Requirement(line)
        lower = [spec.version for spec in req.specifier if spec.operator == ">="]
        name = req.name.lower()
        deps[CONDA_NAMES.get(name, name)] = lower[0] if lower else None
    return deps


def conda_dependencies(text: str) -> dict[str, str | None]:
    """name -> lower bound (``>=``) of environment.yml's conda dependencies (not its pip section)."""
    deps = {}
    top = re.search(r"^dependencies:\n((?:[ \t]+.*\n?)*)", text, re.M)
    assert top, "environment.yml has no dependencies: list"
    for line in top.group(1).splitlines():
        item = re.match(
            r"^  - ([A-Za-z0-9_.-]+)\s*(?:(>=|[=<>!~]=?)\s*([^\s#]+))?\s*(?:#.*)?$", line
        )
        if item is None:  # the pip section, its entries, comments
            continue
        name, op, version = item.groups()
        if name.lower() not in CONDA_ONLY:
            deps[name.lower()] = version if op == ">=" else None
    return deps


def test_environment_yml_matches_pyproject():
    """Every runtime dependency of pyproject.toml is in environment.yml with the same lower
    bound (torch is pytorch on conda-forge), and environment.yml adds none of its own."""
    wanted = pyproject_dependencies((ROOT / "pyproject.toml").read_text())
    conda = conda_dependencies((ROOT / "environment.yml").read_text())
    assert wanted and all(wanted.values()), f"give every dependency a lower bound: {wanted}"
    missing = {name: bound for name, bound in wanted.items() if conda.get(name) != bound}
    extra = {name: bound for name, bound in conda.items() if name not in wanted}
    assert not missing, f"environment.yml lacks or bounds differently: {missing} (in it: {conda})"
    assert not extra, f"environment.yml has dependencies that pyproject.toml lacks: {extra}"


def test_dependency_parsers_see_drift():
    """The two parsers above read what the check needs: names, bounds, the pip section left out."""
    pyproject = '[project]\ndependencies = ["torch>=2.4", "NumPy>=1.24,<3", "tqdm"]\n'
    assert pyproject_dependencies(pyproject) == {"pytorch": "2.4", "numpy": "1.24", "tqdm": None}
    environment = (
        "name: x\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n  - pip\n"
        "  - pytorch>=2.4\n  - numpy >=1.20  # old\n  - tqdm=4.66\n  - pip:\n"
        '      - -e ".[dev]"\n      - einops>=0.7\n'
    )
    assert conda_dependencies(environment) == {"pytorch": "2.4", "numpy": "1.20", "tqdm": None}


def test_vitlib_stays_small_and_the_readme_maps_every_module():
    """The package a student reads in an afternoon: at most 3,000 lines, and the README's module
    map lists every module with its current length (docs/contributing.md refreshes it)."""
    modules = sorted((ROOT / "vitlib").glob("*.py"))
    counts = {f"vitlib/{p.name}": len(p.read_text().splitlines()) for p in modules}
    assert sum(counts.values()) <= 3000, counts
    rows = re.findall(r"^\| \w+ \| `(vitlib/[\w/]+\.py)` \|.*\| (\d+) \|$", (ROOT / "README.md").read_text(), re.M)
    listed = {path: int(lines) for path, lines in rows}
    assert listed == {k: v for k, v in counts.items() if k != "vitlib/__init__.py"}
