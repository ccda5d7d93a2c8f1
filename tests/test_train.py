"""The training loop: determinism, divergence, configuration errors, evaluation."""

import dataclasses
import math

import numpy as np
import pytest

from bnbook import train

from conftest import TINY_DLN, TINY_VGG, assert_same_run


@pytest.mark.parametrize("norm", ["batch", "noisy"])
def test_same_seed_same_bits(fake_cifar, norm):
    cfg = dataclasses.replace(TINY_VGG, norm=norm)
    assert_same_run(train.train(cfg), train.train(cfg))
    other = train.train(dataclasses.replace(cfg, seed=1))
    assert not np.array_equal(other.history["train_loss"], train.train(cfg).history["train_loss"])


def test_training_learns_the_synthetic_task(fake_cifar):
    run = train.train(dataclasses.replace(TINY_VGG, norm="batch", steps=60, eval_every=20, lr=0.05))
    assert run.final["status"] == "ok"
    assert run.history["train_loss"][-10:].mean() < run.history["train_loss"][:10].mean() - 0.2
    assert list(run.history["eval_step"]) == [20, 40, 60]
    assert 0 <= run.final["test_acc"] <= 1


def test_divergence_is_recorded_not_raised():
    run = train.train(dataclasses.replace(TINY_DLN, lr=10.0, steps=200))
    assert run.diverged and run.final["status"] == "diverged"
    k = run.final["diverged_at"]
    assert 0 < k < 200 and run.final["steps_done"] == k
    assert len(run.history["train_loss"]) == k and np.isfinite(run.history["train_loss"]).all()
    assert math.isnan(run.final["test_loss"])


def test_reading_losses_every_few_steps_changes_nothing(fake_cifar):
    """The GPU path reads per-step numbers every `sync_every` steps; on the CPU it gives the same run."""
    cfg = dataclasses.replace(TINY_VGG, norm="batch", steps=10, eval_every=5)
    assert_same_run(train.train(cfg), train.train(cfg, sync_every=3))
    div = dataclasses.replace(TINY_DLN, lr=10.0, steps=200)
    every, deferred = train.train(div), train.train(div, sync_every=7)
    assert deferred.diverged and deferred.final["diverged_at"] == every.final["diverged_at"]
    for k in every.history:
        np.testing.assert_array_equal(every.history[k], deferred.history[k], err_msg=k)
    with pytest.raises(ValueError, match="sync_every"):
        train.train(TINY_DLN, sync_every=0)


def test_dln_full_batch_gd_decreases_loss():
    run = train.train(TINY_DLN)
    loss = run.history["train_loss"]
    assert loss[-1] < loss[0]
    assert np.isnan(run.history["train_acc"]).all()


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(model="resnet"), "model='resnet'"),
        (dict(norm="bn"), "norm='bn'"),
        (dict(lr=-0.1), "lr=-0.1"),
        (dict(lr=float("nan")), "lr=nan"),
        (dict(steps=-1), "steps=-1"),
        (dict(batch_size=1024), "batch_size=1024 exceeds"),
        (dict(act_layers=(9,)), "layers are numbered 1..8"),
        (dict(landscape=(0.5, -1.0)), "multipliers"),
        (dict(probe_every=4, sharpness_every=6), "sharpness_every=6 must be a multiple of probe_every=4"),
        (dict(reduction="mean"), "'mean' for model 'dln' only"),
        (dict(input_norm=True), "input_norm=True is for model 'dln'"),
        (dict(affine=False, norm="l2"), "affine=False is for model 'dln' with norm 'batch' only"),
        (dict(affine=False, norm="batch"), "affine=False is for model 'dln'"),
        (dict(probe_stats="running"), "probe_stats='running'"),
        (dict(probe_stats="frozen", norm="none", landscape=(1.0,)), "probe_stats='frozen' needs a BN norm"),
        (dict(probe_stats="frozen", norm="batch"), "probe_stats='frozen' needs a BN norm"),
        (dict(init="lecun"), "init='lecun' must be one of"),
        (dict(init="he", init_std=0.1), "'he' is for model 'vgg' without init_std"),
    ],
)
def test_bad_config_values_give_clear_errors(change, message):
    with pytest.raises(ValueError, match="invalid Config: .*" + message.replace("(", r"\(").replace(".", r"\.")):
        dataclasses.replace(TINY_VGG, **change)


def test_config_roundtrip_and_label():
    cfg = dataclasses.replace(TINY_VGG, landscape=(0.5, 1.0), act_layers=(1, 3))
    assert train.config_from_dict(dataclasses.asdict(cfg)) == cfg
    assert "VGG-11 ×0.125 width" in cfg.label() and "8 steps" in cfg.label()
    he = dataclasses.replace(cfg, init="he")
    assert "×0.125 width, He init, norm=none" in he.label() and train.config_from_dict(dataclasses.asdict(he)) == he
    with pytest.raises(ValueError, match="unknown Config fields"):
        train.config_from_dict({"nonsense": 1})


@pytest.mark.parametrize("norm", ["noisy", "batch"])
def test_an_interrupted_run_resumes_bit_identically(fake_cifar, tmp_path, monkeypatch, norm):
    cfg = dataclasses.replace(TINY_VGG, norm=norm, steps=12, probe_every=4, act_layers=(2,), ics_layers=(3,),
                              landscape=(1.0,))
    whole = train.train(cfg)
    ckpt = tmp_path / "run.ckpt"
    save = train._save_checkpoint

    def save_then_stop(path, cfg, step, *rest):
        save(path, cfg, step, *rest)
        if step == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train.train(cfg, checkpoint=ckpt, checkpoint_every=4)
    monkeypatch.setattr(train, "_save_checkpoint", save)
    assert ckpt.exists()
    assert_same_run(whole, train.train(cfg, checkpoint=ckpt, checkpoint_every=4))


def test_a_checkpoint_of_another_config_or_a_broken_one_is_refused(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    train.train(dataclasses.replace(TINY_DLN, steps=12), checkpoint=ckpt, checkpoint_every=5)
    with pytest.raises(ValueError, match="belongs to another configuration"):
        train.train(dataclasses.replace(TINY_DLN, steps=12, seed=3), checkpoint=ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:50])
    with pytest.raises(RuntimeError, match="delete it to start over"):
        train.train(dataclasses.replace(TINY_DLN, steps=12), checkpoint=ckpt)


def test_dln_grid_options_build_what_they_say():
    """The DLN's unstated choices (chapter 4's grid): mean loss, input BN, BN without γ and β."""
    base = dataclasses.replace(TINY_DLN, norm="batch")
    plain, mean = train.train(base), train.train(dataclasses.replace(base, reduction="mean"))
    x, y, *_ = train.task(base)
    assert mean.history["train_loss"][0] == pytest.approx(plain.history["train_loss"][0] / len(x), rel=1e-6)
    m = train.build_model(dataclasses.replace(base, input_norm=True))
    assert m.stem is not None and m(x).shape == y.shape
    fixed = train.build_model(dataclasses.replace(base, affine=False))
    assert [n for n, _ in fixed.named_parameters()] == [f"blocks.{i}.layer.weight" for i in range(base.depth)]
    run = train.train(dataclasses.replace(base, affine=False, input_norm=True))
    assert np.isfinite(run.history["train_loss"]).all()
    assert "input BN" in run.config.label() and "without γ, β" in run.config.label()
