"""Landscape summaries of chapter 4 (bnbook.analysis, `# --- landscape (chapter 4) ---`)."""

import dataclasses

import numpy as np
import pytest

from bnbook import analysis
from bnbook.experiments import BOOK_VGG
from bnbook.train import Run, train

from test_train import TINY_VGG


def fake_run(loss, graddiff, beta, steps=None, norm="none", prefix="land", **extra):
    loss, graddiff = np.asarray(loss, float), np.asarray(graddiff, float)
    steps = np.arange(len(loss)) * 50 if steps is None else np.asarray(steps)
    h = {"probe_step": steps, f"{prefix}_loss": loss, f"{prefix}_graddiff": graddiff,
         f"{prefix}_beta": np.asarray(beta, float)} | extra
    return Run(dataclasses.replace(BOOK_VGG, norm=norm), h, {"status": "ok"}, {})


def test_per_probe_quantities_by_hand():
    run = fake_run([[2.0, 1.0, 5.0], [1.0, 1.0, 1.5]], [[1.0, 3.0, 2.0], [0.5, 0.25, 4.0]], [7.0, 8.0])
    np.testing.assert_allclose(analysis.landscape_per_probe(run, "loss_range"), [4.0, 0.5])
    np.testing.assert_allclose(analysis.landscape_per_probe(run, "graddiff"), [3.0, 4.0])
    np.testing.assert_allclose(analysis.landscape_per_probe(run, "beta"), [7.0, 8.0])
    with pytest.raises(ValueError, match="unknown landscape quantity"):
        analysis.landscape_per_probe(run, "curvature")


def test_overflowed_probes_count_as_infinitely_rough():
    run = fake_run([[1.0, np.nan], [1.0, np.inf], [1.0, 2.0]], [[1.0, np.nan], [1.0, 2.0], [1.0, 2.0]],
                   [np.nan, 1.0, 1.0])
    assert analysis.landscape_per_probe(run, "loss_range").tolist() == [np.inf, np.inf, 1.0]
    assert analysis.landscape_per_probe(run, "graddiff").tolist() == [np.inf, 2.0, 2.0]
    assert analysis.landscape_per_probe(run, "beta")[0] == np.inf
    # the median of three with one inf stays finite: an overflow moves a median, it does not poison it
    assert analysis.landscape_median(run, "beta") == 1.0


def test_median_ratio_and_wins_over_the_first_steps():
    rough = fake_run(np.zeros((4, 2)), [[0, 10], [0, 30], [0, 20], [0, 1]], [1, 1, 1, 1])
    smooth = fake_run(np.zeros((4, 2)), [[0, 1], [0, 2], [0, 3], [0, 4]], [1, 1, 1, 1], norm="batch")
    # probed steps 0, 50, 100, 150; "until 150" keeps the first three
    assert analysis.probe_window(rough, until=150).tolist() == [True, True, True, False]
    assert analysis.probe_window(rough, since=50, until=150).tolist() == [False, True, True, False]
    assert analysis.landscape_median(rough, "graddiff", since=50, until=150) == 25.0
    assert analysis.landscape_wins(rough, smooth, "graddiff", since=150) == 0.0
    assert analysis.landscape_median(rough, "graddiff", until=150) == 20.0
    assert analysis.landscape_median(smooth, "graddiff", until=150) == 2.0
    assert analysis.landscape_ratio(rough, smooth, "graddiff", until=150) == pytest.approx(10.0)
    assert analysis.landscape_ratio(rough, smooth, "graddiff") == pytest.approx(15.0 / 2.5)
    assert analysis.landscape_wins(rough, smooth, "graddiff") == 0.75
    assert analysis.landscape_wins(rough, smooth, "graddiff", until=150) == 1.0
    with pytest.raises(ValueError, match="no probed step"):
        analysis.landscape_median(rough, "graddiff", until=0)
    with pytest.raises(ValueError, match="no probed step"):
        analysis.landscape_median(rough, "graddiff", since=200)


def test_wins_uses_the_shared_probes_of_a_diverged_run_and_refuses_mismatched_steps():
    a = fake_run(np.zeros((2, 2)), [[0, 5], [0, 5]], [1, 1])  # diverged after two probes
    b = fake_run(np.zeros((4, 2)), [[0, 1], [0, 9], [0, 1], [0, 1]], [1, 1, 1, 1])
    assert analysis.landscape_wins(a, b, "graddiff") == 0.5
    c = fake_run(np.zeros((2, 2)), [[0, 1], [0, 1]], [1, 1], steps=[0, 7])
    with pytest.raises(ValueError, match="different steps"):
        analysis.landscape_wins(a, c, "graddiff")


def test_random_direction_prefix_and_step_sizes():
    run = fake_run([[1.0, 3.0]], [[2.0, 6.0]], [9.0], prefix="rand")
    assert analysis.landscape_median(run, "loss_range", prefix="rand") == 2.0
    np.testing.assert_allclose(analysis.step_sizes(run), [0.05, 0.1, 0.2, 0.4])


def test_step_shift_by_hand():
    mean = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 3.0]])
    var = np.array([[1.0, 4.0], [2.0, 4.0], [2.0, 2.0]])
    run = fake_run(np.zeros((1, 2)), np.zeros((1, 2)), [1], step_act2_mean=mean, step_act2_var=var)
    s = analysis.step_shift(run, 2)
    np.testing.assert_allclose(s["mean"], [0.5, 1.0])
    np.testing.assert_allclose(s["var"], [0.5, 1.0])
    np.testing.assert_allclose(s["rel_mean"], [(1 / 1 + 0) / 2, (0 + 2 / 2) / 2])
    np.testing.assert_allclose(s["rel_var"], [(1 / 1 + 0) / 2, (0 + 2 / 4) / 2])


def test_excess_kurtosis():
    gen = np.random.default_rng(0)
    g = gen.standard_normal((3, 200_000))
    np.testing.assert_allclose(analysis.excess_kurtosis(g), 0.0, atol=0.05)
    u = gen.uniform(-1, 1, 200_000)
    assert analysis.excess_kurtosis(u) == pytest.approx(-1.2, abs=0.02)  # uniform: 9/5 − 3
    lap = gen.laplace(size=200_000)
    assert analysis.excess_kurtosis(lap) == pytest.approx(3.0, abs=0.3)  # heavy tails: a noisy estimate


def test_summaries_of_a_real_probed_run(fake_cifar):
    cfg = dataclasses.replace(TINY_VGG, norm="batch", steps=6, probe_every=2, landscape=(0.5, 1.0, 2.0),
                              random_direction=True, act_layers=(2,))
    run = train(cfg)
    for prefix in ("land", "rand"):
        for q in analysis.LANDSCAPE_QUANTITIES:
            v = analysis.landscape_per_probe(run, q, prefix)
            assert v.shape == (3,) and np.all(np.isfinite(v)) and np.all(v >= 0), (prefix, q)
    # β is the largest gradient change per unit of distance moved
    gnorm = run.history["land_gnorm"]
    beta = (run.history["land_graddiff"] / (analysis.step_sizes(run)[None] * gnorm[:, None])).max(1)
    np.testing.assert_allclose(analysis.landscape_per_probe(run, "beta"), beta, rtol=1e-9)
    assert analysis.step_shift(run, 2)["mean"].shape == (5,)


def test_landscape_table_collects_medians_maxima_ratios_and_wins():
    rough = fake_run([[0, 4], [0, 2], [0, 9]], [[0, 10], [0, 30], [0, 20]], [5, 50, 8])
    smooth = fake_run([[0, 1], [0, 1], [0, 1]], [[0, 1], [0, 2], [0, 40]], [1, 2, 3], norm="batch")
    t = analysis.landscape_table(rough, smooth)
    assert set(t) == set(analysis.LANDSCAPE_QUANTITIES)
    row = t["graddiff"]
    assert {k: row[k] for k in ("median_a", "median_b", "max_a", "max_b", "ratio", "max_ratio")} == {
        "median_a": 20.0, "median_b": 2.0, "max_a": 30.0, "max_b": 40.0, "ratio": 10.0, "max_ratio": 0.75}
    assert row["wins"] == pytest.approx(2 / 3)
    assert row["spread_a"] == pytest.approx(np.std(np.log10([10, 30, 20])))
    assert row["spread_ratio"] == pytest.approx(row["spread_a"] / np.std(np.log10([1, 2, 40])))
    assert t["loss_range"]["ratio"] == 4.0 and t["beta"]["max_a"] == 50.0
    assert analysis.landscape_table(rough, smooth, until=100)["graddiff"]["wins"] == 1.0


def test_weight_growth_is_one_at_initialization_and_tracks_rescaling():
    from bnbook.train import build_model

    cfg = dataclasses.replace(BOOK_VGG, norm="batch")
    state = build_model(cfg).state_dict()
    run = Run(cfg, {}, {"status": "ok"}, state)
    np.testing.assert_allclose(analysis.weight_growth(run), np.ones(cfg.num_layers()))
    grown = dict(state) | {"blocks.2.layer.weight": 3 * state["blocks.2.layer.weight"]}
    g = analysis.weight_growth(Run(cfg, {}, {"status": "ok"}, grown))
    assert g[2] == pytest.approx(3.0) and np.allclose(np.delete(g, 2), 1.0)


def test_spread_is_zero_when_flat_and_one_for_decade_swings():
    flat = fake_run(np.zeros((3, 2)), [[0, 5], [0, 5], [0, 5]], [2, 2, 2])
    assert analysis.landscape_spread(flat, "graddiff") == 0.0
    swing = fake_run(np.zeros((2, 2)), [[0, 1], [0, 100]], [1, np.nan])
    assert analysis.landscape_spread(swing, "graddiff") == pytest.approx(1.0)
    assert analysis.landscape_spread(swing, "beta") == np.inf  # an overflowed probe
    assert analysis.landscape_spread(swing, "graddiff", since=50) == 0.0
