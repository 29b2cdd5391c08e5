"""Every course notebook in ``notebooks/`` executes without error, and matches its source.

Each committed notebook is run top to bottom in a fresh kernel of this Python interpreter
(``notebooks/build.py``'s :func:`execute`); a failing cell fails the test with the cell and
its traceback. Outputs are not compared (numbers and timings vary by machine); what is
checked is that every code cell ran, none produced an error, and the figures are drawn.
A second, cheap test checks that the committed cells are the ones ``build.py`` writes, so
the notebooks are edited in one place.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def load_build():
    """Import ``notebooks/build.py`` (the notebooks folder is not a package)."""
    spec = importlib.util.spec_from_file_location("notebook_build", NOTEBOOK_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILD = load_build()
NAMES = list(BUILD.NOTEBOOKS)


def test_every_notebook_is_committed_and_built_from_build_py():
    on_disk = sorted(path.name for path in NOTEBOOK_DIR.glob("*.ipynb"))
    assert on_disk == sorted(NAMES)
    for name in NAMES:
        committed = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
        built = BUILD.make_notebook(BUILD.NOTEBOOKS[name])
        assert [(c.cell_type, c.source) for c in committed.cells] == [
            (c.cell_type, c.source) for c in built.cells
        ], f"{name} differs from notebooks/build.py: rebuild it (python notebooks/build.py {name[:2]})"
        assert committed.metadata["kernelspec"]["name"] == "python3"
        code_cells = [c for c in committed.cells if c.cell_type == "code"]
        assert all(c.execution_count for c in code_cells), f"{name} is committed without outputs"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    BUILD.execute(notebook, timeout=300)  # raises CellExecutionError on the first failing cell

    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells)
    outputs = [output for cell in code_cells for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert figures, f"{name} drew no figure"
