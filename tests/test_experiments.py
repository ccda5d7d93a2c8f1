"""The book's experiments: chapter run lists, and the committed grid artifact against the code."""


import numpy as np

from bnbook import experiments


def test_the_committed_dln_grid_matches_the_codes_grid():
    """data/artifacts/dln_grid.json holds every cell of `experiments.dln_grid()` with exactly its configurations
    (else `load_grid` raises), with provenance, and its book cell is chapter 4's own DLN runs."""
    doc = experiments.load_grid("dln")
    for key in ("git_commit", "cpu", "date", "wall_time_s", "command"):
        assert doc["provenance"][key], key
    assert doc["provenance"]["command"] == "python -m bnbook grid"
    book = next(iter(experiments.dln_grid().values()))
    assert all(c in experiments.chapter_runs(4) for c in book)
    for rows in doc["cells"].values():
        for r in rows:
            assert np.isfinite(r["summary"]["loss0"])


def test_the_committed_lr_sweep_matches_the_codes_sweep():
    """data/artifacts/vgg_lr_sweep.json holds every cell of `experiments.lr_sweep()` (both norms at every learning
    rate of `VGG_SWEEP_LRS`, each on `SEEDS`), with provenance; its lr-0.1 cells are chapter 4's own runs, and every
    run has the book's probes (40 a run)."""
    doc = experiments.load_grid("lr-sweep")
    for key in ("git_commit", "cpu", "date", "wall_time_s", "command"):
        assert doc["provenance"][key], key
    assert doc["provenance"]["command"] == "python -m bnbook grid lr-sweep"
    cells = experiments.lr_sweep()
    assert list(cells) == [f"{n} lr {lr:g}" for n in ("none", "batch") for lr in experiments.VGG_SWEEP_LRS]
    assert all(c in experiments.chapter_runs(4) for n in ("none", "batch") for c in cells[f"{n} lr 0.1"])
    for rows in doc["cells"].values():
        for r in rows:
            assert r["final"]["status"] in ("ok", "diverged")
            assert len(r["wnorm2_init"]) == len(r["wnorm2_end"]) == 8  # VGG-11's eight conv layers
            assert len(r["probe_step"]) == len(r["lr_beta"]) >= 30


def test_the_committed_extended_scale_matches_the_code():
    """data/artifacts/vgg_extended.json holds `experiments.extended()` (VGG at twice the book's width, 3,000 steps,
    standard and BN at lr 0.1 on `SEEDS`), with provenance, each run with >= 30 landscape probes."""
    from bnbook import analysis

    doc = experiments.load_grid("extended")
    assert doc["provenance"]["command"] == "python -m bnbook grid extended"
    for runs in analysis.grid_runs(doc).values():
        for r in runs:
            assert r.config.steps >= 3000 and r.config.width >= 0.25
            assert len(r.history["probe_step"]) >= 30 and r.history["land_loss"].shape[1] == len(r.config.landscape)
