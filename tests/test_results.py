"""The run cache: hits, invalidation by source change, atomic writes, corrupted files."""

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from bnbook import results, train

from conftest import TINY_DLN, assert_same_run


def test_get_run_trains_once_then_hits_the_cache(cache, monkeypatch):
    run = results.get_run(TINY_DLN)
    path = results.run_path(TINY_DLN)
    assert path.exists() and path.parent == cache
    monkeypatch.setattr(results, "train", lambda *a, **k: pytest.fail("should have been a cache hit"))
    again = results.get_run(TINY_DLN)
    assert_same_run(run, again)
    assert again.final == pytest.approx(run.final, nan_ok=True)
    assert again.provenance["torch"] == torch.__version__ and "git_commit" in again.provenance
    assert torch.equal(again.model().blocks[0].layer.weight, run.state["blocks.0.layer.weight"])


def test_different_configs_have_different_keys():
    assert results.run_key(TINY_DLN) != results.run_key(dataclasses.replace(TINY_DLN, seed=1))
    assert results.run_key(TINY_DLN) == results.run_key(dataclasses.replace(TINY_DLN))


def test_changing_the_package_source_invalidates_the_cache(cache, tmp_path, monkeypatch):
    key = results.run_key(TINY_DLN)
    fake = tmp_path / "pkg"
    shutil.copytree(results.PACKAGE_DIR, fake, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(results, "PACKAGE_DIR", fake)
    assert results.run_key(TINY_DLN) == key
    (fake / "plots.py").write_text("# plots do not change numbers\n")
    assert results.run_key(TINY_DLN) == key
    norms = (fake / "norms.py").read_text()
    (fake / "norms.py").write_text(norms + "\n# a comment changes no number\n")
    assert results.run_key(TINY_DLN) == key
    (fake / "norms.py").write_text(norms + "\nEPS_FLOOR = 1e-12\n")  # code: it might
    assert results.run_key(TINY_DLN) != key


TRAIN_STEP = '''
def step(x, lr, bar):
    """Take one step."""
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")  # why: a negative lr ascends
    assert x.ndim == 2, "a matrix"
    warnings.warn("slow")
    bar.set_postfix(loss=f"{x.sum():.3g}")
    return x - lr * x
'''


@pytest.mark.parametrize("edit, same", [
    (("Take one step.", "Take a step of SGD."), True),  # docstring
    (("why: a negative lr ascends", "because"), True),  # comment
    (("got {lr}", "got lr={lr!r}; pass lr > 0"), True),  # error message
    (('"a matrix"', '"expected (N, C)"'), True),  # assert message
    (('"slow"', '"this is slow"'), True),  # warning
    (('loss=f"{x.sum():.3g}"', 'loss=f"{x.sum():.4g}", lr=lr'), True),  # progress bar
    (("lr <= 0", "lr < 0"), False),  # a condition
    (("ValueError", "TypeError"), False),  # which error is raised
    (("x - lr * x", "x - lr * x * 0.5"), False),  # arithmetic
    (("x.ndim == 2", "x.ndim == 4"), False),  # an assert's test
])
def test_code_fingerprint_sees_code_not_text(edit, same):
    old, new = edit
    assert old in TRAIN_STEP
    edited = TRAIN_STEP.replace(old, new)
    assert (results.code_fingerprint(edited) == results.code_fingerprint(TRAIN_STEP)) is same


def test_interrupted_write_leaves_nothing(tmp_path):
    target = tmp_path / "run.npz"

    def write(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        results.atomic_write(target, write)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_save_keeps_the_previous_file(cache, monkeypatch):
    run = results.get_run(TINY_DLN)
    path = results.run_path(TINY_DLN)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", lambda f, **kw: (f.write(b"half"), (_ for _ in ()).throw(KeyboardInterrupt)))
    with pytest.raises(KeyboardInterrupt):
        results.save_run(run, path)
    assert path.read_bytes() == before
    assert [p.name for p in cache.iterdir()] == [path.name]


def test_corrupted_cache_file_is_recomputed_with_a_warning(cache):
    run = results.get_run(TINY_DLN)
    path = results.run_path(TINY_DLN)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="discarding unreadable cached run"):
        again = results.get_run(TINY_DLN)
    assert_same_run(run, again)
    results.load_run(path)  # rewritten and readable


def test_diverged_runs_are_cached_as_diverged(cache):
    cfg = dataclasses.replace(TINY_DLN, lr=10.0, steps=200)
    assert results.get_run(cfg).diverged
    assert results.load_run(results.run_path(cfg)).final["status"] == "diverged"


def test_get_runs_trains_in_parallel_with_the_same_bits(cache, monkeypatch):
    configs = [dataclasses.replace(TINY_DLN, norm=n, seed=s) for n in ("none", "batch") for s in (0, 1)]
    monkeypatch.setenv("BNBOOK_WORKERS", "2")
    parallel = results.get_runs(configs + configs[:1])  # a repeated config is trained once
    assert len(parallel) == 5 and len(list(cache.glob("*.npz"))) == 4
    for cfg, run in zip(configs, parallel):
        assert run.config == cfg
        assert_same_run(run, train.train(cfg))  # as if trained alone, in this process


def test_bad_worker_count_is_explained(monkeypatch):
    monkeypatch.setenv("BNBOOK_WORKERS", "two")
    with pytest.raises(ValueError, match="BNBOOK_WORKERS"):
        results.workers()


def test_an_ensemble_is_every_seed_of_its_configuration_in_seed_order(cache, monkeypatch):
    from bnbook import experiments

    vgg = dataclasses.replace(experiments.BOOK_VGG, norm="batch", lr=0.5, seed=3)
    assert [c.seed for c in experiments.ensemble(vgg)] == list(experiments.HEADLINE_SEEDS)  # headline: 5 seeds
    assert [c.seed for c in experiments.ensemble(dataclasses.replace(vgg, lr=0.01))] == list(experiments.SEEDS)
    # chapter 4's He control restates the headline comparison at lr 0.1: the headline's 5 seeds
    assert [c.seed for c in experiments.HE_VGG] == list(experiments.HEADLINE_SEEDS) and experiments.HE_VGG[0].init == "he"
    assert set(experiments.HE_VGG) <= set(experiments.chapter_runs(4))
    assert all(dataclasses.replace(c, seed=0) == dataclasses.replace(vgg, seed=0) for c in experiments.ensemble(vgg))
    monkeypatch.setattr(experiments, "SEEDS", (0, 1))  # a tiny ensemble of the tiny DLN: trained, then cached
    runs = results.get_ensemble(TINY_DLN)
    assert [r.config.seed for r in runs] == [0, 1]
    assert runs[0].final["train_loss"] != runs[1].final["train_loss"]  # the seed changes the run
    assert all(results.run_path(r.config).exists() for r in runs)
