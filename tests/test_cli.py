"""The command line: help lists the commands, bad input gives a clear error and a non-zero exit."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from bnbook import __main__ as cli

from conftest import assert_same_run


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "bnbook", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for command in ("train", "paper", "data", "cache", "bench"):
        assert command in out.stdout


def test_train_rejects_bad_config_values(capsys):
    assert cli.main(["train", "--norm", "bn"]) == 2
    assert "norm='bn' is not one of" in capsys.readouterr().err


def test_train_runs_and_caches_a_tiny_dln(cache, capsys):
    argv = ["train", "--model", "dln", "--depth", "4", "--hidden", "5", "--train-size", "20",
            "--lr", "1e-4", "--steps", "20", "--eval-every", "10", "--landscape", "0.5,1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "DLN 4×5" in out and '"status": "ok"' in out
    assert len(list(cache.glob("*.npz"))) == 1
    assert cli.main(["cache"]) == 0 and "1 cached runs" in capsys.readouterr().out


def test_cache_fill_trains_only_the_missing_runs_it_is_asked_for(cache, monkeypatch, capsys):
    from bnbook import experiments

    tiny = dataclasses.replace(experiments.BOOK_DLN, depth=4, hidden=5, train_size=20, steps=20, eval_every=10,
                               probe_every=10, sharpness_every=0, act_layers=(), ics_layers=(), landscape=())
    monkeypatch.setattr(experiments, "CHAPTERS", {1: [tiny], 2: [tiny, dataclasses.replace(tiny, seed=1)]})
    monkeypatch.setenv("BNBOOK_WORKERS", "1")
    assert cli.main(["cache", "--fill", "--chapter", "1"]) == 0
    assert "0 of 1 runs already cached" in capsys.readouterr().out and len(list(cache.glob("*.npz"))) == 1
    assert cli.main(["cache", "--fill", "--model", "vgg"]) == 0  # no VGG run in these chapters: nothing to train
    assert "0 of 0 runs" in capsys.readouterr().out and len(list(cache.glob("*.npz"))) == 1
    assert cli.main(["cache", "--fill"]) == 0
    assert "1 of 2 runs already cached" in capsys.readouterr().out and len(list(cache.glob("*.npz"))) == 2
    assert cli.main(["cache", "--chapter", "1"]) == 2 and "add --fill" in capsys.readouterr().err


def test_data_without_download_explains_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BNBOOK_DATA", str(tmp_path))
    assert cli.main(["data", "--no-download"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "cifar-10-batches-py") in err and "BNBOOK_DATA" in err


def test_diverging_run_exits_with_its_own_code(cache, capsys):
    argv = ["train", "--model", "dln", "--depth", "6", "--hidden", "5", "--train-size", "40",
            "--lr", "10", "--steps", "200"]
    assert cli.main(argv) == 3
    assert '"status": "diverged"' in capsys.readouterr().out


def test_paper_command_end_to_end_at_a_tiny_scale(fake_cifar, tmp_path, monkeypatch, capsys):
    from bnbook import experiments, results, train

    monkeypatch.setenv("BNBOOK_PAPER", str(tmp_path / "paper"))
    monkeypatch.setenv("BNBOOK_CACHE", str(tmp_path / "cache"))
    # the papers' scales, shrunk: the command and the chapters' lookup use the same paper_scale()
    monkeypatch.setattr(experiments, "PAPER_VGG", dataclasses.replace(
        experiments.PAPER_VGG, width=0.0625, steps=6, train_size=256, test_size=128, eval_every=3, probe_every=3,
        sharpness_every=3))
    monkeypatch.setattr(experiments, "PAPER_DLN", dataclasses.replace(experiments.PAPER_DLN, steps=6, probe_every=3,
                                                                                 sharpness_every=3))
    stop_at = {"step": 3}
    save = train._save_checkpoint

    def save_then_stop(path, cfg, step, *rest):  # the first run is interrupted after its first checkpoint
        save(path, cfg, step, *rest)
        if step == stop_at.pop("step", None):
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save_checkpoint", save_then_stop)
    assert cli.main(["paper", "--chapter", "5", "--checkpoint-every", "3"]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert len(list((tmp_path / "paper").glob("*.ckpt"))) == 1
    assert cli.main(["paper", "--chapter", "5", "--list"]) == 0
    assert "resumes" in capsys.readouterr().out
    assert cli.main(["paper", "--chapter", "5", "--checkpoint-every", "3"]) == 0
    out = capsys.readouterr().out
    assert "2 paper-scale runs of chapter(s) 5" in out and out.count("test acc") == 2
    assert len(list((tmp_path / "paper").glob("*.npz"))) == 2 and not list((tmp_path / "paper").glob("*.ckpt"))
    # an interrupted-and-resumed run is the same as one trained in one go
    cfg = experiments.paper_scale(experiments.chapter_runs(5)[0])  # standard, seed 0
    monkeypatch.setattr(train, "_save_checkpoint", save)
    run = results.find_paper_run(cfg)
    assert_same_run(run, train.train(cfg, threads=run.provenance["threads"]))
    # the chapter shows them beside the book scale
    table = experiments.scale_comparison(5)
    assert table.count("paper scale test acc") == 2 and "book scale not computed" in table
    assert cli.main(["paper", "--chapter", "5"]) == 0 and capsys.readouterr().out.count("done") == 2


def test_paper_command_rejects_an_unknown_chapter(capsys):
    assert cli.main(["paper", "--chapter", "9", "--list"]) == 2
    assert "chapter 9 has no runs" in capsys.readouterr().err


def test_paper_runs_as_cluster_jobs_with_submitits_local_executor(tmp_path, monkeypatch, capsys):
    """`--cluster local`: one submitit job per run, each in its own process, gathered in the paper folder."""
    pytest.importorskip("submitit")
    from bnbook import data, experiments, results, train

    try:
        data.ensure_cifar10(download=False)  # the jobs are other processes: they read the real data set
    except Exception as e:
        pytest.skip(f"needs CIFAR-10: {e}")
    monkeypatch.setenv("BNBOOK_PAPER", str(tmp_path / "paper"))
    monkeypatch.setattr(experiments, "PAPER_VGG", dataclasses.replace(
        experiments.PAPER_VGG, width=0.0625, steps=4, train_size=256, test_size=128, eval_every=2, probe_every=2))
    argv = ["paper", "--chapter", "5", "--cluster", "local", "--device", "cpu", "--threads", "1",
            "--timeout-min", "10"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "submitted 2 jobs (0 runs already done) to local" in out and out.count("done ") == 2
    cfg = experiments.paper_scale([c for c in experiments.chapter_runs(5) if c.seed == 0][1])  # BN, seed 0
    run = results.find_paper_run(cfg)
    assert run is not None and run.provenance["device"] == "cpu"
    assert_same_run(run, train.train(cfg, threads=1))  # a job's run is the run trained here
    assert cli.main(argv) == 0 and "submitted 0 jobs (2 runs already done)" in capsys.readouterr().out
    # a job stopped by the scheduler resubmits itself and resumes from its checkpoint
    job = results.PaperJob(cfg, str(tmp_path / "paper"))
    assert job.checkpoint().function is job


def test_grid_writes_its_artifact_with_provenance_at_a_tiny_scale(cache, tmp_path, monkeypatch, capsys):
    """`python -m bnbook grid --steps 10 --seeds 1`: every cell trained and summarized, provenance recorded, and the
    file loads back against the code's grid of the same scale (and is refused against another)."""
    from bnbook import experiments

    monkeypatch.setenv("BNBOOK_WORKERS", "1")
    out = tmp_path / "grid.json"
    assert cli.main(["grid", "--steps", "10", "--seeds", "1", "--out", str(out)]) == 0
    assert "14 cells" in capsys.readouterr().out
    cells = experiments.dln_grid(10, seeds=(0,))
    doc = experiments.load_grid("dln", out, cells)
    assert doc["provenance"]["command"] == "python -m bnbook grid --steps 10 --seeds 1"
    for key in ("git_commit", "cpu", "date", "wall_time_s", "torch"):
        assert doc["provenance"][key]
    rows = [r for rs in doc["cells"].values() for r in rs]
    assert len(rows) == sum(len(c) for c in cells.values())
    assert all(len(r["sv_first"]) == 10 for r in rows if r["config"]["norm"] == "batch")
    assert any(r["summary"]["diverged_at"] == r["summary"]["diverged_at"] for r in rows)  # lr 1e-4 diverges
    with pytest.raises(ValueError, match="rerun `python -m bnbook grid`"):
        experiments.load_grid("dln", out, experiments.dln_grid(20, seeds=(0,)))
    assert cli.main(["grid", "--steps", "3"]) == 2  # too short to probe: a clear error


def test_grid_lr_sweep_writes_its_artifact_at_a_tiny_scale(cache, tmp_path, monkeypatch, capsys):
    """`python -m bnbook grid lr-sweep --steps 10 --seeds 1` (two learning rates, to keep it short): each run's
    final numbers, sharpness and weight norms, and the command in the provenance; it loads back."""
    from bnbook import experiments

    monkeypatch.setenv("BNBOOK_WORKERS", "1")
    monkeypatch.setattr(experiments, "VGG_SWEEP_LRS", (0.1, 0.8))
    out = tmp_path / "sweep.json"
    assert cli.main(["grid", "lr-sweep", "--steps", "10", "--seeds", "1", "--out", str(out)]) == 0
    assert "4 cells, 4 runs" in capsys.readouterr().out
    doc = experiments.load_grid("lr-sweep", out, experiments.lr_sweep(10, seeds=(0,)))
    assert doc["provenance"]["command"] == "python -m bnbook grid lr-sweep --steps 10 --seeds 1"
    rows = [r for rs in doc["cells"].values() for r in rs]
    assert [r["config"]["lr"] for r in rows] == [0.1, 0.8, 0.1, 0.8]
    for r in rows:
        assert r["sharp_step"] == [0, 5] or r["final"]["status"] == "diverged"
        assert len(r["wnorm2_init"]) == 8 and r["wnorm2_init"] != r["wnorm2_end"]


def test_grid_extended_writes_histories_that_read_back_as_runs(cache, tmp_path, monkeypatch, capsys):
    """`python -m bnbook grid extended --steps 10 --seeds 1`: each run's history without its per-step arrays,
    read back by `analysis.grid_runs` as runs whose landscape numbers are those of the cached run."""
    from bnbook import analysis, experiments, results

    monkeypatch.setenv("BNBOOK_WORKERS", "1")
    out = tmp_path / "extended.json"
    assert cli.main(["grid", "extended", "--steps", "10", "--seeds", "1", "--out", str(out)]) == 0
    assert "2 cells, 2 runs" in capsys.readouterr().out
    cells = experiments.extended(10, seeds=(0,))
    doc = experiments.load_grid("extended", out, cells)
    assert doc["provenance"]["command"] == "python -m bnbook grid extended --steps 10 --seeds 1"
    runs = analysis.grid_runs(doc)
    for cell, cfgs in cells.items():
        (run,), (cached,) = runs[cell], results.get_runs(cfgs)
        assert run.config == cached.config and run.final == cached.final
        assert not any(k.startswith("step") or k.endswith("_values") for k in run.history)
        for k in ("probe_step", "land_loss", "land_graddiff", "land_beta", "sharp_lmax"):
            np.testing.assert_array_equal(run.history[k], cached.history[k])
    with pytest.raises(ValueError, match="rerun `python -m bnbook grid extended`"):
        experiments.load_grid("extended", out, experiments.extended(20, seeds=(0,)))
