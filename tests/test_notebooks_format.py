"""The committed notebooks are normalised, start with a Colab badge, and teach through vitlib
(no model class or training loop defined in a notebook)."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# Keys that nbstripout removes beyond its defaults; keep in sync with docs/contributing.md.
EXTRA_KEYS = (
    "metadata.papermill cell.metadata.papermill metadata.widgets metadata.language_info.version"
)
ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("colab_links", ROOT / "notebooks" / "colab_links.py")
colab_links = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(colab_links)
REPOSITORY = colab_links.repository()
IDS = [path.name for path in NOTEBOOKS]


def code_of(nb) -> str:
    """Python source of all code cells, IPython magics (``%pip``...) turned into ``pass``."""
    cells = [
        "\n".join(re.sub(r"^(\s*)[%!].*$", r"\1pass", line) for line in cell.source.splitlines())
        for cell in nb.cells
        if cell.cell_type == "code"
    ]
    return "\n\n".join(cells)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4, f"expected the teaching notebooks in notebooks/, found {IDS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_normalised(path):
    """What ``nbstripout --keep-output --keep-count --extra-keys ...`` would leave unchanged."""
    if importlib.util.find_spec("nbstripout") is None:
        pytest.skip("nbstripout is not installed (pip install -e .[dev])")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nbstripout",
            "--verify",
            "--keep-output",
            "--keep-count",
            "--extra-keys",
            EXTRA_KEYS,
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        f"{path.name} is not normalised; run: python -m nbstripout --keep-output --keep-count "
        f'--extra-keys "{EXTRA_KEYS}" notebooks/*.ipynb\n{result.stdout}{result.stderr}'
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_metadata_and_counts(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.kernelspec.name == "python3", "use the standard python3 kernelspec"
    assert "papermill" not in nb.metadata and "widgets" not in nb.metadata
    for cell in nb.cells:
        assert "papermill" not in cell.metadata, "strip papermill metadata (see test_normalised)"
        if cell.cell_type == "code" and cell.get("outputs"):
            assert cell.execution_count is not None, (
                f"{path.name}: a cell with outputs lost its execution count (nbval needs it): "
                f"{cell.source[:60]!r}"
            )
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"{path.name} was saved with an error output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_starts_with_colab_badge(path):
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0]
    badge = colab_links.badge(REPOSITORY, path.name)
    assert first.cell_type == "markdown" and first.source.startswith(badge), (
        f"{path.name} must open with its Colab badge: {badge}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_parameters_cell(path):
    """Every notebook has a ``parameters``-tagged cell of plain assignments (papermill, Colab)."""
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, (
        f"{path.name}: expected one cell tagged 'parameters', found {len(tagged)}"
    )
    tree = ast.parse(tagged[0].source)
    assert all(isinstance(node, (ast.Assign, ast.AnnAssign)) for node in tree.body)
    names = {
        t.id
        for node in tree.body
        for t in getattr(node, "targets", [getattr(node, "target", None)])
    }
    assert "datapath" in names or path.name.startswith("06"), f"{path.name}: no datapath parameter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_injected_parameters_cell(path):
    """papermill run in place leaves an ``injected-parameters`` cell after the parameters cell;
    stored, it would override the parameters cell on every Run All (and a Colab user's edits)."""
    nb = nbformat.read(path, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert not injected, (
        f"{path.name} holds papermill's injected-parameters cell: delete it "
        f"({injected[0].source.strip()!r})"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_teaches_through_vitlib(path):
    """Imports vitlib; defines no nn.Module subclass and no training loop (those live in vitlib)."""
    tree = ast.parse(code_of(nbformat.read(path, as_version=4)))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert "vitlib" in imported, f"{path.name} does not import vitlib"
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(base) for base in node.bases]
            assert not any("Module" in base for base in bases), (
                f"{path.name} defines a model class {node.name}({', '.join(bases)}): move it to vitlib"
            )
        if isinstance(node, (ast.For, ast.While)):
            body = ast.unparse(node)
            assert not (".backward(" in body and ".step(" in body), (
                f"{path.name} has a training loop (backward + step inside a loop): use vitlib.train"
            )


def test_parser_catches_a_model_class(tmp_path):
    """The checks above would fail on a notebook that defines a model and trains it."""
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import torch\nimport vitlib\nclass Net(torch.nn.Module):\n    pass\n"
                "for x in data:\n    loss.backward()\n    opt.step()\n"
            )
        ]
    )
    tree = ast.parse(code_of(nb))
    assert any(isinstance(n, ast.ClassDef) for n in ast.walk(tree))
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(AssertionError):
        test_teaches_through_vitlib(path)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_colab_links_are_generated_from_pyproject():
    """Every badge, install cell and repository link is what notebooks/colab_links.py writes
    from pyproject's [project.urls] Repository."""
    changed = colab_links.rendered_files(REPOSITORY)
    assert not changed, (
        f"{[p.name for p in changed]} name another repository than pyproject.toml's {REPOSITORY}; "
        "run: python notebooks/colab_links.py"
    )


def test_colab_links_follow_a_new_address():
    """Another address in pyproject.toml reaches every badge, install line and link."""
    moved = "https://github.com/someone/vitlib"
    changed = colab_links.rendered_files(moved)
    assert set(changed) == {ROOT / "README.md", *NOTEBOOKS}
    for path, text in changed.items():
        assert "vitlib-org" not in text.replace("`vitlib-org`", ""), path.name
        assert "someone/vitlib" in text, path.name
    install = colab_links.render(
        '%pip install --quiet "vitlib @ git+https://github.com/a/vitlib"', moved
    )
    assert install == f'%pip install --quiet "vitlib @ git+{moved}"'
