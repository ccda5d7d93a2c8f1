"""The book's experiments: chapter run lists, and the committed grid artifact against the code."""

import numpy as np

from bnbook import experiments


def test_the_committed_dln_grid_matches_the_codes_grid():
    """data/artifacts/dln_grid.json holds every cell of `experiments.dln_grid()` with exactly its configurations
    (else `load_dln_grid` raises), with provenance, and its book cell is chapter 4's own DLN runs."""
    doc = experiments.load_dln_grid()
    for key in ("git_commit", "cpu", "date", "wall_time_s", "command"):
        assert doc["provenance"][key], key
    assert doc["provenance"]["command"] == "python -m bnbook grid"
    book = next(iter(experiments.dln_grid().values()))
    assert all(c in experiments.chapter_runs(4) for c in book)
    for rows in doc["cells"].values():
        for r in rows:
            assert np.isfinite(r["summary"]["loss0"])
