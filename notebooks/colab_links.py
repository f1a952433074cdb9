"""Write the repository's address into every Colab badge, install cell and GitHub link, from one
place: ``[project.urls] Repository`` in pyproject.toml.

    python notebooks/colab_links.py           # rewrite README.md and notebooks/*.ipynb
    python notebooks/colab_links.py --check   # list what differs; exit status 1 if anything does

A badge is generated from the notebook's file name, an install cell's ``%pip install`` line and
every link to the repository (``github.com/OWNER/vitlib``) from the address.
tests/test_notebooks_format.py runs ``--check``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE = re.compile(
    r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*?"
    r"/notebooks/(?P<name>[\w.-]+\.ipynb)\)"
)
INSTALL = re.compile(r'%pip install --quiet "vitlib @ git\+[^"]*"')
REPO_LINK = re.compile(r"https://github\.com/[\w.-]+/vitlib\b")


def repository(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The address in pyproject.toml, e.g. ``https://github.com/vitlib-org/vitlib``."""
    found = re.search(r'^Repository = "(https://github\.com/[\w.-]+/[\w.-]+)"$',
                      pyproject.read_text(), re.M)  # fmt: skip
    if found is None:
        raise SystemExit(f'{pyproject}: no line Repository = "https://github.com/OWNER/NAME"')
    return found.group(1)


def badge(repo: str, notebook: str) -> str:
    """The markdown of the Colab badge of ``notebook`` (a file name in notebooks/)."""
    owner_name = repo.removeprefix("https://github.com/")
    colab = f"https://colab.research.google.com/github/{owner_name}/blob/main/notebooks/{notebook}"
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab})"


def render(text: str, repo: str) -> str:
    """``text`` with every badge, install line and repository link naming ``repo``."""
    text = BADGE.sub(lambda m: badge(repo, m["name"]), text)
    text = INSTALL.sub(f'%pip install --quiet "vitlib @ git+{repo}"', text)
    return REPO_LINK.sub(repo, text)


def rendered_files(repo: str) -> dict[Path, str]:
    """Every file whose links differ from ``repo``'s: path -> its text as it should be."""
    changed = {}
    readme = ROOT / "README.md"
    if render(readme.read_text(), repo) != readme.read_text():
        changed[readme] = render(readme.read_text(), repo)
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        for cell in notebook["cells"]:
            source = "".join(cell["source"])
            cell["source"] = render(source, repo).splitlines(keepends=True)
        text = json.dumps(notebook, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
        if json.loads(text) != json.loads(path.read_text()):
            changed[path] = text
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only list the files that differ")
    args = parser.parse_args(argv)
    repo = repository()
    changed = rendered_files(repo)
    for path, text in changed.items():
        if not args.check:
            path.write_text(text)
        print(f"{'differs' if args.check else 'rewrote'}: {path.relative_to(ROOT)} (-> {repo})")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
