"""Every page of the book is committed executed: all code cells ran, in order, with no error output.

The HTML build renders committed outputs and never executes (see _config.yml), so this is what keeps an
unexecuted or failed notebook out of the book; nbval (same test command) re-executes each one.
"""

from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _toc_notebooks() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]] + [c["file"] for c in toc.get("chapters", [])]
    return [ROOT / f"{p}.ipynb" for p in pages if (ROOT / f"{p}.ipynb").exists()]


def test_every_chapter_notebook_is_in_the_toc():
    in_toc = set(_toc_notebooks())
    assert set((ROOT / "chapters").glob("*.ipynb")) <= in_toc, "a notebook in chapters/ is missing from _toc.yml"
    assert len(in_toc) >= 2


@pytest.mark.parametrize("path", _toc_notebooks(), ids=lambda p: p.name)
def test_notebook_is_committed_executed_without_errors(path):
    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts, f"{path.name} has no code cells"
    assert None not in counts, f"{path.name}: {counts.count(None)} code cells were never executed; re-execute it"
    assert counts == list(range(1, len(counts) + 1)), f"{path.name} was executed out of order: {counts}"
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{path.name}: a cell failed: {out.get('ename')}: {out.get('evalue')}"


@pytest.mark.parametrize("path", _toc_notebooks(), ids=lambda p: p.name)
def test_every_figure_cell_has_its_figure_committed(path):
    # a kernel that inherits MPLBACKEND=Agg draws nothing: each chapter's first cell selects the inline backend
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            kinds = {k for out in cell.get("outputs", []) for k in out.get("data", {})}
            if "application/vnd.jupyter.widget-view+json" in kinds:  # an interactive explorer draws on demand
                continue
            assert "image/png" in kinds, f"{path.name}, cell {i}: plt.show() but no figure in the committed output"
