"""Summaries of runs: the numbers the chapters report (distribution shift, ICS, landscape ratios, …).

Functions here read `Run.history`/`Run.final` only; they never train. (This module is not part of the
run cache key: editing it does not invalidate cached runs.)
"""

from __future__ import annotations

import numpy as np

from .train import Run


# --- distributions and internal covariate shift (chapters 1 and 3) ---

def mean_step_shift(run: Run, layer: int, skip: int = 0) -> dict[str, float]:
    """`step_shift` (the step-to-step shift of layer #`layer`'s mean and variance) averaged over steps.

    Santurkar et al.'s appendix measure, one number per quantity (`mean`, `var`, `rel_mean`,
    `rel_var`): the average over the successive-step pairs after the first `skip`.
    """
    return {k: float(np.mean(v[skip:])) for k, v in step_shift(run, layer).items()}


def quantile_drift(run: Run, layer: int) -> np.ndarray:
    """How far layer #`layer`'s activation distribution has moved from its initial one, at every probe.

    The mean over the probed quantiles (1 % … 99 %) of |q_t − q_0|, in units of the initial spread
    q_0(85 %) − q_0(15 %): 0 means the distribution is where it started; 1 means it moved, on
    average, by as much as its own initial width (the drift that Ioffe & Szegedy's Fig. 1 shows).
    """
    from .probes import QUANTILES

    q = np.asarray(run.history[f"act{layer}_quantiles"], dtype=np.float64)
    lo, hi = QUANTILES.index(0.15), QUANTILES.index(0.85)
    spread = q[0, hi] - q[0, lo]
    return np.abs(q - q[0]).mean(axis=1) / spread


def _trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    c = np.cumsum(np.insert(np.asarray(x, dtype=np.float64), 0, 0.0))
    n = np.minimum(np.arange(1, len(x) + 1), window)
    return (c[1:] - c[np.arange(1, len(x) + 1) - n]) / n


def steps_to(run: Run, threshold: float, key: str = "train_acc", window: int = 50) -> int | None:
    """The first step (1-based) at which the trailing `window`-step mean of `key` reaches `threshold`.

    None if it never does (or the history is empty). Meant for metrics that increase (accuracies).
    """
    h = run.history[key]
    if len(h) == 0:
        return None
    hit = np.flatnonzero(_trailing_mean(h, window) >= threshold)
    return int(hit[0]) + 1 if len(hit) else None


def ics_summary(run: Run, layer: int, start: int = 0) -> dict[str, float]:
    """The internal covariate shift of layer #`layer` (Definition 2.1), summarized over probed steps ≥ `start`.

    Medians over the probes of `l2` = ‖G − G'‖₂, `cos` = cos∠(G, G'), `gnorm` = ‖G‖₂ and
    `rel` = ‖G − G'‖₂ / ‖G‖₂ (the ℓ2 difference in units of the gradient itself), and `n`, the
    number of probes. Medians, because a single probe at a loss spike should not decide the summary.
    """
    h = run.history
    sel = h["probe_step"] >= start
    l2 = np.asarray(h[f"ics{layer}_l2"], dtype=np.float64)[sel]
    g = np.asarray(h[f"ics{layer}_gnorm"], dtype=np.float64)[sel]
    cos = np.asarray(h[f"ics{layer}_cos"], dtype=np.float64)[sel]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = l2 / g
    return {
        "l2": float(np.median(l2)),
        "cos": float(np.median(cos)),
        "gnorm": float(np.median(g)),
        "rel": float(np.median(rel)),
        "n": int(sel.sum()),
    }


def mean_spread(values) -> tuple[float, float, float, float]:
    """(mean, sample standard deviation, min, max) of a few numbers (e.g. one metric over seeds)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_spread needs at least one value")
    sd = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return float(v.mean()), sd, float(v.min()), float(v.max())


# --- landscape (chapter 4) ---


def _finite_or_inf(v: np.ndarray) -> np.ndarray:
    """NaN → +inf: a probe whose loss or gradient blew up is as far from smooth as it gets."""
    v = np.asarray(v, dtype=np.float64)
    return np.where(np.isnan(v), np.inf, v)


LANDSCAPE_QUANTITIES = ("loss_range", "graddiff", "beta")


def landscape_per_probe(run: Run, quantity: str, prefix: str = "land") -> np.ndarray:
    """One number per probed step for a landscape probe (Santurkar et al. Fig. 4).

    - `loss_range`: max_η L(x(η)) − min_η L(x(η)), the height of the loss band of panel (a);
    - `graddiff`: max_η ‖∇L(x(η)) − g‖₂, the top of the gradient-predictiveness band of panel (b);
    - `beta`: the effective β-smoothness max_η ‖∇L(x(η)) − g‖₂ / ‖η d‖₂ of panel (c).

    `prefix` is "land" (along the gradient) or "rand" (along a random direction of the gradient's norm).
    NaN (a probe that overflowed) counts as +inf.
    """
    h = run.history
    if quantity == "loss_range":
        v = _finite_or_inf(h[f"{prefix}_loss"])
        with np.errstate(invalid="ignore"):
            out = v.max(axis=1) - v.min(axis=1)
        return np.where(np.isnan(out), np.inf, out)
    if quantity == "graddiff":
        return _finite_or_inf(h[f"{prefix}_graddiff"]).max(axis=1)
    if quantity == "beta":
        return _finite_or_inf(h[f"{prefix}_beta"])
    raise ValueError(f"unknown landscape quantity {quantity!r}; choose one of {LANDSCAPE_QUANTITIES}")


def probes_before(run: Run, until: int | None) -> np.ndarray:
    """Boolean mask of the probed steps < `until` (all of them when `until` is None)."""
    steps = run.history["probe_step"]
    return np.ones(len(steps), bool) if until is None else steps < until


def landscape_median(run: Run, quantity: str, until: int | None = None, prefix: str = "land") -> float:
    """Median over the probed steps < `until` of `landscape_per_probe(run, quantity, prefix)`."""
    v = landscape_per_probe(run, quantity, prefix)[probes_before(run, until)]
    if len(v) == 0:
        raise ValueError(f"no probed step before step {until} in this run")
    return float(np.median(v))


def landscape_ratio(
    a: Run, b: Run, quantity: str, until: int | None = None, prefix: str = "land"
) -> float:
    """Median of `quantity` for run `a` over the median for run `b`, over the probed steps < `until`.

    A ratio > 1 means `a`'s landscape is rougher than `b`'s by that factor (e.g. a = standard, b = BN).
    """
    return landscape_median(a, quantity, until, prefix) / landscape_median(b, quantity, until, prefix)


def landscape_wins(a: Run, b: Run, quantity: str, until: int | None = None, prefix: str = "land") -> float:
    """Fraction of the probed steps < `until` (shared by both runs) at which `a`'s value exceeds `b`'s."""
    n = min(len(a.history["probe_step"]), len(b.history["probe_step"]))
    steps = a.history["probe_step"][:n]
    if not np.array_equal(steps, b.history["probe_step"][:n]):
        raise ValueError("the two runs were probed at different steps")
    keep = np.ones(n, bool) if until is None else steps < until
    va = landscape_per_probe(a, quantity, prefix)[:n][keep]
    vb = landscape_per_probe(b, quantity, prefix)[:n][keep]
    return float(np.mean(va > vb))


def step_sizes(run: Run) -> np.ndarray:
    """The probes' step sizes η = lr × multiplier."""
    return run.config.lr * np.asarray(run.config.landscape, dtype=np.float64)


def step_shift(run: Run, layer: int) -> dict[str, np.ndarray]:
    """How much layer #`layer`'s input distribution moves between successive training steps.

    From the per-step record `step_act{i}_mean/var` (per channel, in the training forward pass):
    `mean` = mean over channels of |μ_{t+1} − μ_t| and `var` = mean over channels of |σ²_{t+1} − σ²_t|,
    one value per pair of successive steps; `rel_mean`/`rel_var` divide by the channel's scale (σ_t
    resp. σ²_t) first, which makes networks whose activations have different sizes comparable.
    """
    mu, var = run.history[f"step_act{layer}_mean"].astype(np.float64), run.history[f"step_act{layer}_var"].astype(np.float64)
    dmu, dvar = np.abs(np.diff(mu, axis=0)), np.abs(np.diff(var, axis=0))
    scale = np.maximum(var[:-1], 1e-12)
    return {
        "mean": dmu.mean(axis=1),
        "var": dvar.mean(axis=1),
        "rel_mean": (dmu / np.sqrt(scale)).mean(axis=1),
        "rel_var": (dvar / scale).mean(axis=1),
    }


def excess_kurtosis(values: np.ndarray) -> np.ndarray:
    """Excess kurtosis E[(x−μ)⁴]/σ⁴ − 3 along the last axis (0 for a Gaussian); one value per row."""
    v = np.asarray(values, dtype=np.float64)
    c = v - v.mean(axis=-1, keepdims=True)
    m2 = (c**2).mean(axis=-1)
    return (c**4).mean(axis=-1) / np.maximum(m2, 1e-300) ** 2 - 3.0
