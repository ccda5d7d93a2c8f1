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


CHAPTERS = [p for p in _toc_notebooks() if p.name[:2] in ("01", "02", "03", "04", "05")]
TEXT_WIDTH = 78  # bnbook.plots.TEXT_WIDTH: an output line wider than this scrolls sideways in the book's column


def _text_outputs(cell) -> list[str]:
    outs = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            outs.append(out.text)
        elif "text/plain" in out.get("data", {}) and not ({"text/html", "text/markdown", "image/png"} & set(out.data)):
            outs.append(out.data["text/plain"])  # what the book shows when nothing richer is there
    return outs


@pytest.mark.parametrize("path", _toc_notebooks(), ids=lambda p: p.name)
def test_no_output_line_is_wider_than_the_column(path):
    nb = nbformat.read(path, as_version=4)
    wide = [(i, line) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            and not {"remove-cell", "remove-output"} & set(cell.metadata.get("tags", []))
            for text in _text_outputs(cell) for line in text.splitlines() if len(line) > TEXT_WIDTH]
    assert not wide, f"{path.name}: {len(wide)} output lines over {TEXT_WIDTH} characters, e.g. cell {wide[0][0]}: {wide[0][1]!r}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_figure_is_numbered_and_captioned(path):
    """Figures reach the book through `{glue:figure}` (numbered, with a caption), never as a bare cell output."""
    nb = nbformat.read(path, as_version=4)
    bare = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            and not {"remove-cell", "remove-output"} & set(cell.metadata.get("tags", []))
            for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert not bare, f"{path.name}: cells {bare} show a figure with no number or caption (glue it: {{glue:figure}})"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    figures = text.count("{glue:figure}")
    assert figures >= 1 and text.count(":name: fig-") >= figures, f"{path.name}: every glue:figure needs a :name:"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_ends_with_exercises_whose_solutions_execute(path):
    """3 to 5 exercises after an "Exercises" heading, each with a hidden solution cell that checks itself."""
    nb = nbformat.read(path, as_version=4)
    start = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                  and c.source.lstrip().startswith("## Exercises")), None)
    assert start is not None, f"{path.name} has no '## Exercises' section"
    solutions = [c for c in nb.cells[start:] if c.cell_type == "code" and "hide-cell" in c.metadata.get("tags", [])]
    assert 3 <= len(solutions) <= 5, f"{path.name}: {len(solutions)} solution cells (tagged hide-cell) after Exercises"
    for c in solutions:
        assert "assert" in c.source, f"{path.name}: a solution does not check its answer:\n{c.source[:200]}"
        assert c.execution_count is not None  # committed executed (and nbval re-executes it)


@pytest.mark.parametrize("path", [p for p in CHAPTERS if p.name[:2] != "05"], ids=lambda p: p.name)
def test_chapter_has_an_offline_player_and_a_live_widget(path):
    nb = nbformat.read(path, as_version=4)
    html = [out.data["text/html"] for c in nb.cells if c.cell_type == "code" for out in c.get("outputs", [])
            if "text/html" in out.get("data", {})]
    players = [h for h in html if "anim-controls" in h]  # bnbook.plots.player
    assert players, f"{path.name} has no interactive figure for the rendered book (plots.player)"
    assert all("https://" not in h and "http://" not in h for h in players), f"{path.name}: a player loads from the network"
    widgets = [c for c in nb.cells if c.cell_type == "code" and "interact" in c.source
               and "remove-cell" in c.metadata.get("tags", [])]
    assert widgets, f"{path.name} has no live ipywidgets control (in a cell tagged remove-cell)"
