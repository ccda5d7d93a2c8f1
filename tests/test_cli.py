"""The command line: help lists the commands, bad input gives a clear error and a non-zero exit."""

import subprocess
import sys

import pytest

from bnbook import __main__ as cli


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "bnbook", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for command in ("train", "data", "cache", "bench"):
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
