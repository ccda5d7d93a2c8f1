"""Summaries of runs used by chapter 3: distribution shift and drift, ICS, time to accuracy, seed spread."""

import numpy as np
import pytest

from bnbook import analysis
from bnbook.probes import QUANTILES
from bnbook.experiments import BOOK_VGG
from bnbook.train import Run


def fake_run(**history) -> Run:
    return Run(BOOK_VGG, {k: np.asarray(v) for k, v in history.items()}, {"status": "ok"}, {})


def test_mean_step_shift_averages_the_successive_differences():
    # two channels; the means move by 0.5 and 0.1 per step, the variances alternate 1 ↔ 4
    steps = 5
    mu = np.stack([0.5 * np.arange(steps), -0.1 * np.arange(steps)], axis=1)
    var = np.stack([np.where(np.arange(steps) % 2, 4.0, 1.0)] * 2, axis=1)
    run = fake_run(step_act2_mean=mu, step_act2_var=var)
    s = analysis.mean_step_shift(run, 2)
    assert s["mean"] == pytest.approx(0.3)
    assert s["var"] == pytest.approx(3.0)
    # relative to the scale at step t: σ_t alternates 1, 2 → |Δμ|/σ_t averages (0.3/1 + 0.3/2)/2 over pairs
    assert s["rel_mean"] == pytest.approx(np.mean([0.3, 0.15, 0.3, 0.15]))
    assert s["rel_var"] == pytest.approx(np.mean([3.0, 0.75, 3.0, 0.75]))
    assert analysis.mean_step_shift(run, 2, skip=3)["rel_mean"] == pytest.approx(0.15)


def test_quantile_drift_is_zero_for_a_still_distribution_and_counts_in_initial_spreads():
    q0 = np.array(QUANTILES) * 2.0  # 15 % → 0.3, 85 % → 1.7: spread 1.4
    q = np.stack([q0, q0, q0 + 0.7, 3 * q0])
    run = fake_run(act5_quantiles=q, probe_step=np.array([0, 50, 100, 150]))
    d = analysis.quantile_drift(run, 5)
    assert d[0] == 0 and d[1] == 0
    assert d[2] == pytest.approx(0.5)
    assert d[3] == pytest.approx(np.mean(2 * q0) / 1.4)
    # measured from step 100 on: the reference is the third probe, whose spread is also 1.4
    d100 = analysis.quantile_drift(run, 5, since=100)
    assert d100[2] == 0 and d100[0] == pytest.approx(0.5)
    assert d100[3] == pytest.approx(np.mean(np.abs(3 * q0 - q0 - 0.7)) / 1.4)


def test_steps_to_uses_the_trailing_mean():
    acc = np.r_[np.zeros(10), np.ones(10)]
    run = fake_run(train_acc=acc)
    assert analysis.steps_to(run, 1.0, window=1) == 11
    assert analysis.steps_to(run, 0.5, window=4) == 12  # the mean of steps 9..12 is 0.5
    assert analysis.steps_to(run, 1.01, window=1) is None
    assert analysis.steps_to(fake_run(train_acc=np.zeros(0)), 0.1) is None


def test_ics_summary_takes_medians_over_the_probes_from_start():
    run = fake_run(
        probe_step=np.array([0, 50, 100, 150]),
        ics3_l2=np.array([100.0, 1.0, 2.0, 3.0]),
        ics3_gnorm=np.array([1.0, 10.0, 10.0, 10.0]),
        ics3_cos=np.array([-1.0, 0.9, 0.8, 0.7]),
    )
    s = analysis.ics_summary(run, 3, start=50)
    assert s == pytest.approx({"l2": 2.0, "cos": 0.8, "gnorm": 10.0, "rel": 0.2, "n": 3})
    assert analysis.ics_summary(run, 3)["n"] == 4


def test_mean_spread():
    assert analysis.mean_spread([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0, 1.0, 3.0))
    assert analysis.mean_spread([5.0]) == (5.0, 0.0, 5.0, 5.0)
    with pytest.raises(ValueError):
        analysis.mean_spread([])
