"""Summaries of runs: the numbers the chapters report (distribution shift, ICS, landscape ratios, …).

Functions here read `Run.history`/`Run.final` only; they never train. (This module is not part of the
run cache key: editing it does not invalidate cached runs.)
"""

from __future__ import annotations

import dataclasses

import numpy as np
from torch import Tensor

from .probes import QUANTILES
from .train import Run


# --- distributions and internal covariate shift (chapters 1 and 3) ---

# Chapters 1–2: Ioffe & Szegedy's Fig. 1 (one unit's percentiles, every unit's drift) and how fast a run gets
# somewhere. (BN at inference, which runs models, is in probes.py.)


def unit_percentiles(run: Run, layer: int, quantiles: tuple[float, ...] = (0.15, 0.5, 0.85)) -> np.ndarray:
    """(probes × len(quantiles)) percentiles of unit 0's sigmoid input in layer #`layer`, over each probed batch.

    The curves of Ioffe & Szegedy's Fig. 1 (b, c); the input to the nonlinearity is the norm's output
    (for the standard network, W u + b itself). `quantiles` must be among `probes.QUANTILES`.
    """
    missing = [q for q in quantiles if q not in QUANTILES]
    if missing:
        raise ValueError(f"quantiles {missing} were not recorded; choose among {QUANTILES}")
    q = np.asarray(run.history[f"act{layer}_unit_quantiles"], dtype=np.float64)
    return q[:, [QUANTILES.index(v) for v in quantiles]]


def percentile_drift(
    run: Run, layer: int, quantiles: tuple[float, ...] = (0.15, 0.5, 0.85), window: int = 5
) -> dict[str, np.ndarray]:
    """How far unit 0's percentiles (`unit_percentiles`) travel over training, and how noisy one probe is.

    One batch gives a noisy percentile, so each trajectory is first averaged over `window` consecutive
    probes (full windows only). Per percentile: `start`/`end`, the averages over the first/last window;
    `shift` = end − start; `range` = max − min of the averaged trajectory (the furthest it travels,
    even if it comes back); `noise`, the sampling noise of a single probe (robust standard deviation of
    successive-probe differences, / √2). Also `spread_start`/`spread_end`: the outer percentiles'
    distance (last − first of `quantiles`) at the start and the end, the distribution's own width.
    """
    p = unit_percentiles(run, layer, quantiles)
    if len(p) < window or window < 1:
        raise ValueError(f"need at least window={window} >= 1 probes, the run has {len(p)}")
    kernel = np.ones(window) / window
    smooth = np.stack([np.convolve(p[:, k], kernel, mode="valid") for k in range(p.shape[1])], axis=1)
    diffs = np.diff(p, axis=0)
    noise = 1.4826 * np.median(np.abs(diffs - np.median(diffs, axis=0)), axis=0) / np.sqrt(2.0)
    start, end = smooth[0], smooth[-1]
    return {
        "start": start,
        "end": end,
        "shift": end - start,
        "range": smooth.max(axis=0) - smooth.min(axis=0),
        "noise": noise,
        "spread_start": np.float64(start[-1] - start[0]),
        "spread_end": np.float64(end[-1] - end[0]),
    }


def unit_drift(run: Run, layer: int, window: int = 100) -> dict[str, np.ndarray]:
    """How far every unit's sigmoid-input distribution moved between the start and the end of training.

    From the per-step batch mean and variance of each unit of layer #`layer` (`step_act{i}_mean/var`),
    averaged over the first and the last `window` steps: (μ₀, σ₀²) and (μ₁, σ₁²) per unit. Returns per
    unit `mean_shift` = |μ₁ − μ₀| / √((σ₀² + σ₁²)/2) (the move of the mean in pooled standard
    deviations, which makes networks whose activations have different sizes comparable) and
    `std_ratio` = σ₁/σ₀. With BN, μ and σ are (to rounding) the layer's β and |γ|: its drift is theirs.
    """
    mu = np.asarray(run.history[f"step_act{layer}_mean"], dtype=np.float64)
    var = np.asarray(run.history[f"step_act{layer}_var"], dtype=np.float64)
    if len(mu) < 2 * window or window < 1:
        raise ValueError(f"need at least 2 * window = {2 * window} steps, the run has {len(mu)}")
    mu0, mu1 = mu[:window].mean(0), mu[-window:].mean(0)
    var0, var1 = var[:window].mean(0), var[-window:].mean(0)
    return {
        "mean_shift": np.abs(mu1 - mu0) / np.sqrt(np.maximum((var0 + var1) / 2, 1e-300)),
        "std_ratio": np.sqrt(var1 / np.maximum(var0, 1e-300)),
    }


def first_eval_reaching(run: Run, threshold: float, key: str = "test_acc") -> int | None:
    """The first evaluation step at which `key` (an evaluated metric, e.g. test accuracy) is ≥ `threshold`.

    None if it never is. Evaluations happen every `eval_every` steps, so this is a step count at that
    resolution (the ImageNet headline of Ioffe & Szegedy: "steps to reach 72.2%").
    """
    v = np.asarray(run.history[key], dtype=np.float64)
    hit = np.flatnonzero(v >= threshold)
    return int(run.history["eval_step"][hit[0]]) if len(hit) else None


def mean_step_shift(run: Run, layer: int, skip: int = 0) -> dict[str, float]:
    """`step_shift` (the step-to-step shift of layer #`layer`'s mean and variance) averaged over steps.

    Santurkar et al.'s appendix measure, one number per quantity (`mean`, `var`, `rel_mean`,
    `rel_var`): the average over the successive-step pairs after the first `skip`.
    """
    return {k: float(np.mean(v[skip:])) for k, v in step_shift(run, layer).items()}


def quantile_drift(run: Run, layer: int, since: int = 0) -> np.ndarray:
    """How far layer #`layer`'s activation distribution is from where it was at step `since`, at every probe.

    The mean over the probed quantiles (1 % … 99 %) of |q_t − q_ref|, in units of the reference
    spread q_ref(85 %) − q_ref(15 %), where ref is the first probe at a step ≥ `since`: 0 means the
    distribution is where it was; 1 means it moved, on average, by as much as its own width then (the
    drift that Ioffe & Szegedy's Fig. 1 shows). One value per probe.
    """
    q = np.asarray(run.history[f"act{layer}_quantiles"], dtype=np.float64)
    ref = q[int(np.argmax(run.history["probe_step"] >= since))]
    spread = ref[QUANTILES.index(0.85)] - ref[QUANTILES.index(0.15)]
    return np.abs(q - ref).mean(axis=1) / spread


def smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first values average over what there is)."""
    x = np.asarray(x, dtype=np.float64)
    if window <= 1 or len(x) == 0:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    n = np.minimum(np.arange(1, len(x) + 1), window)
    return (c[1:] - c[np.arange(1, len(x) + 1) - n]) / n


def steps_to(run: Run, threshold: float, key: str = "train_acc", window: int = 50) -> int | None:
    """The first step (1-based) at which the trailing `window`-step mean of `key` reaches `threshold`.

    None if it never does (or the history is empty). Meant for metrics that increase (accuracies).
    """
    h = run.history[key]
    if len(h) == 0:
        return None
    hit = np.flatnonzero(smooth(h, window) >= threshold)
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
# The loss range and the gradient change scale with the gradient: at equal η, the network with the larger ‖g‖
# probes a longer segment (BN's ‖g‖ is about 67× the standard VGG's at step 0, 1.5-2.2× over the probes from step 100 on).
# Normalized: the gradient change relative to ‖g‖, and the loss range relative to lr·‖g‖², the decrease a step of
# size lr would give on a linear landscape. (The effective β already divides by the step's length η‖g‖; the
# gradient change over ‖g‖ is η times the change per unit of length, at the η where the change is largest.)
NORMALIZED_QUANTITIES = ("loss_range_rel", "graddiff_rel")
# how the book names them in prose, tables and claims
LANDSCAPE_NAMES = {"loss_range": "loss range", "graddiff": "gradient change", "beta": "effective β",
                   "loss_range_rel": "loss range / (lr·‖g‖²)", "graddiff_rel": "gradient change / ‖g‖"}


def landscape_per_probe(run: Run, quantity: str, prefix: str = "land") -> np.ndarray:
    """One number per probed step for a landscape probe (Santurkar et al. Fig. 4).

    - `loss_range`: max_η L(x(η)) − min_η L(x(η)), the height of the loss band of panel (a);
    - `graddiff`: max_η ‖∇L(x(η)) − g‖₂, the top of the gradient-predictiveness band of panel (b);
    - `beta`: the effective β-smoothness max_η ‖∇L(x(η)) − g‖₂ / ‖η d‖₂ of panel (c);
    - `loss_range_rel`, `graddiff_rel` (`NORMALIZED_QUANTITIES`): the first over lr·‖g‖², the second over ‖g‖.

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
    if quantity in NORMALIZED_QUANTITIES:
        g = np.asarray(h[f"{prefix}_gnorm"], dtype=np.float64)
        scale = run.config.lr * g**2 if quantity == "loss_range_rel" else g
        return landscape_per_probe(run, quantity[: -len("_rel")], prefix) / scale
    raise ValueError(f"unknown landscape quantity {quantity!r}; choose one of "
                     f"{LANDSCAPE_QUANTITIES + NORMALIZED_QUANTITIES}")


def sharpness_steps(run: Run) -> np.ndarray:
    """The probed steps at which the sharpness probe ran (`Config.sharpness_every`); empty if it never did."""
    every = run.config.sharpness_every
    steps = run.history["probe_step"]
    return steps[steps % every == 0] if every and "sharp_lmax" in run.history else steps[:0]


def probe_window(run: Run, since: int | None = None, until: int | None = None) -> np.ndarray:
    """Boolean mask of the probed steps s with since <= s < until (None: no bound on that side)."""
    steps = run.history["probe_step"]
    keep = np.ones(len(steps), bool)
    if since is not None:
        keep &= steps >= since
    if until is not None:
        keep &= steps < until
    return keep


def _window_values(run: Run, quantity: str, since: int | None, until: int | None, prefix: str) -> np.ndarray:
    v = landscape_per_probe(run, quantity, prefix)[probe_window(run, since, until)]
    if len(v) == 0:
        raise ValueError(f"no probed step in [{since}, {until}) in this run")
    return v


def landscape_median(
    run: Run, quantity: str, until: int | None = None, prefix: str = "land", since: int | None = None
) -> float:
    """Median over the probed steps in [`since`, `until`) of `landscape_per_probe(run, quantity, prefix)`."""
    return float(np.median(_window_values(run, quantity, since, until, prefix)))


def landscape_spread(
    run: Run, quantity: str, until: int | None = None, prefix: str = "land", since: int | None = None
) -> float:
    """How much a landscape quantity fluctuates from probe to probe: the standard deviation of its log10.

    0 for a flat curve; 1 means typical excursions of a factor of 10. Over the probed steps in
    [`since`, `until`); an overflowed probe (inf) makes it inf.
    """
    v = _window_values(run, quantity, since, until, prefix)
    if not np.all(np.isfinite(v)):
        return float("inf")
    return float(np.std(np.log10(np.maximum(v, 1e-300))))


def landscape_ratio(
    a: Run, b: Run, quantity: str, until: int | None = None, prefix: str = "land", since: int | None = None
) -> float:
    """Median of `quantity` for run `a` over the median for run `b`, over the probed steps in [`since`, `until`).

    A ratio > 1 means `a`'s landscape is rougher than `b`'s by that factor (e.g. a = standard, b = BN).
    """
    return landscape_median(a, quantity, until, prefix, since) / landscape_median(b, quantity, until, prefix, since)


def landscape_wins(
    a: Run, b: Run, quantity: str, until: int | None = None, prefix: str = "land", since: int | None = None
) -> float:
    """Fraction of the probed steps in [`since`, `until`) (shared by both runs) at which `a` exceeds `b`."""
    n = min(len(a.history["probe_step"]), len(b.history["probe_step"]))
    steps = a.history["probe_step"][:n]
    if not np.array_equal(steps, b.history["probe_step"][:n]):
        raise ValueError("the two runs were probed at different steps")
    keep = probe_window(a, since, until)[:n]
    va = landscape_per_probe(a, quantity, prefix)[:n][keep]
    vb = landscape_per_probe(b, quantity, prefix)[:n][keep]
    return float(np.mean(va > vb))


def landscape_table(
    a: Run, b: Run, until: int | None = None, prefix: str = "land", since: int | None = None,
    quantities: tuple[str, ...] = LANDSCAPE_QUANTITIES,
) -> dict[str, dict[str, float]]:
    """Landscape quantities of runs `a` and `b` side by side, over the probed steps in [`since`, `until`).

    Per quantity (`quantities`: the paper's, or `NORMALIZED_QUANTITIES`): the medians (`median_a`, `median_b`), maxima (`max_a`, `max_b`)
    and spreads (`spread_a`, `spread_b`, `landscape_spread`) over those probes; `ratio` = median_a /
    median_b, `max_ratio` = max_a / max_b (how much higher `a`'s worst spike is), `spread_ratio` =
    spread_a / spread_b, and `wins` = the fraction of the probes at which `a` is rougher (`landscape_wins`).
    """
    out = {}
    for q in quantities:
        va, vb = (_window_values(r, q, since, until, prefix) for r in (a, b))
        sa, sb = (landscape_spread(r, q, until, prefix, since) for r in (a, b))
        out[q] = {
            "median_a": float(np.median(va)), "median_b": float(np.median(vb)),
            "max_a": float(va.max()), "max_b": float(vb.max()),
            "spread_a": sa, "spread_b": sb,
            "ratio": landscape_ratio(a, b, q, until, prefix, since), "max_ratio": float(va.max() / vb.max()),
            "spread_ratio": sa / sb if sb > 0 else float("inf"),
            "wins": landscape_wins(a, b, q, until, prefix, since),
        }
    return out


def step_sizes(run: Run) -> np.ndarray:
    """The probes' step sizes η = lr × multiplier."""
    return run.config.lr * np.asarray(run.config.landscape, dtype=np.float64)


def weight_growth(run: Run) -> np.ndarray:
    """‖W_i‖ at the end of the run over ‖W_i‖ at initialization, for each layer #i's weight.

    With BN, a layer's output does not depend on the scale of its weight W_i, and the gradient with respect
    to W_i shrinks as 1/‖W_i‖ (Ioffe & Szegedy, Section 3): weights that grow take smaller effective steps.
    """
    from .train import build_model  # the deterministic initialization of this run

    init = build_model(run.config).state_dict()
    return np.array([(run.state[k].double().norm() / init[k].double().norm()).item() for k in _layer_weight_keys(init)])


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


# --- the deep linear network's grid (chapter 4.4) ---

DLN_EARLY = 1000  # "early in training", where the paper's standard DLN has its β ≈ 1e15: the first tenth of 10k steps


def dln_summary(run: Run, early: int = DLN_EARLY) -> dict[str, float]:
    """One DLN run in the numbers of chapter 4.4's grid (NaN where the run has no such probe; a probe that
    overflowed counts as +inf, as in `landscape_per_probe`).

    Loss at step 0 and at the end; along the gradient: effective β at step 0, its maximum over the probes
    before step `early` and its median over training (the paper's panel), the same for the loss range;
    lr·β (median) and lr·λ_max (step 0 and median: the edge of stability is 2); the end-to-end matrix's largest
    singular value and its rank (singular values above 1e-3 of the largest) at the first and last probe
    (`probes.end_to_end`); and the median
    cos(G, G′) of chapter 3's ICS at layers #9 and #17.
    """
    h, lr = run.history, run.config.lr
    out: dict[str, float] = {"loss0": float(h["train_loss"][0]) if len(h["train_loss"]) else np.nan,
                             "final_loss": float(run.final["train_loss"]),
                             "diverged_at": float(run.final["diverged_at"]) if run.diverged else np.nan}
    steps = h["probe_step"]
    first = steps < early
    for q in ("beta", "loss_range"):
        v = landscape_per_probe(run, q) if len(steps) else np.zeros(0)
        out[f"{q}0"] = float(v[0]) if len(v) else np.nan
        out[f"{q}_early"] = float(np.max(v[first])) if first.any() else np.nan
        out[f"{q}_median"] = float(np.median(v)) if len(v) else np.nan
    out["lr_beta_median"] = lr * out["beta_median"]
    at = np.isin(steps, sharpness_steps(run))
    lmax = np.asarray(h.get("sharp_lmax", np.zeros(len(steps))), dtype=np.float64)[at] if at.any() else np.zeros(0)
    out["lr_lmax0"] = lr * float(lmax[0]) if len(lmax) else np.nan
    out["lr_lmax_median"] = lr * float(np.nanmedian(lmax)) if len(lmax) and np.isfinite(lmax).any() else np.nan
    sv = h.get("e2e_sv")
    for name, k in (("first", 0), ("last", -1)):
        s = sv[k] if sv is not None and len(sv) else np.full(1, np.nan)
        out[f"sv_max_{name}"] = float(s.max())
        # singular values within 1e-3 of the largest: the directions the product still maps with some weight
        out[f"rank_{name}"] = float((s > 1e-3 * s.max()).sum()) if np.isfinite(s).all() else np.nan
    for i in (9, 17):
        key = f"ics{i}_cos"
        out[f"ics{i}_cos_median"] = float(np.nanmedian(h[key])) if key in h and len(h[key]) else np.nan
    return out


def dln_grid_row(run: Run) -> dict:
    """One run of chapter 4.4's DLN grid as its artifact stores it: `dln_summary`, and the end-to-end matrix's
    singular values at the first and last probe (empty without that probe)."""
    sv = run.history.get("e2e_sv")
    return {"summary": dln_summary(run),
            "sv_first": sv[0].tolist() if sv is not None and len(sv) else [],
            "sv_last": sv[-1].tolist() if sv is not None and len(sv) else []}


# --- the VGG's learning-rate sweep (chapter 4.9) ---

def layer_weight_norms(state: dict[str, Tensor]) -> list[float]:
    """‖w‖² of each block's layer weight (conv or linear), in block order. With BN after the layer, the loss does
    not depend on the weight's scale, and a gradient step of size η moves its direction as a step of η/‖w‖² would
    at unit norm: BN's effective learning rate (chapter 2, scale invariance; Arora, Li & Lyu 2019)."""
    return [float(state[k].double().pow(2).sum()) for k in _layer_weight_keys(state)]


def _layer_weight_keys(state: dict[str, Tensor]) -> list[str]:
    """The state-dict keys of each block's layer weight, in block order."""
    return sorted((k for k in state if k.startswith("blocks.") and k.endswith(".layer.weight")),
                  key=lambda k: int(k.split(".")[1]))


def lr_sweep_row(run: Run) -> dict:
    """One run of chapter 4.9's learning-rate sweep as its artifact stores it: the final numbers (`status`,
    `diverged_at`, test and train accuracy and loss), the test accuracy at each evaluation, lr·λ_max and lr·gᵀHg/‖g‖²
    at each sharpness probe, lr·β at each landscape probe, and each block's ‖w‖² at initialization and at the end
    (`layer_weight_norms`; NaN after a divergence)."""
    from .train import build_model

    h, f, lr = run.history, run.final, run.config.lr
    at = np.isin(h["probe_step"], sharpness_steps(run))
    finite = lambda v: [float(x) if np.isfinite(x) else None for x in np.asarray(v, dtype=np.float64)]
    return {"final": {k: (float(f[k]) if isinstance(f.get(k), (int, float)) else f.get(k))
                      for k in ("status", "diverged_at", "test_acc", "train_acc", "test_loss", "train_loss")},
            "eval_step": h["eval_step"].tolist(), "test_acc": finite(h["test_acc"]),
            "sharp_step": h["probe_step"][at].tolist(),
            "lr_lmax": finite(lr * h["sharp_lmax"][at]), "lr_grad_curv": finite(lr * h["sharp_grad"][at]),
            "probe_step": h["probe_step"].tolist(), "lr_beta": finite(lr * landscape_per_probe(run, "beta")),
            "wnorm2_init": layer_weight_norms(build_model(run.config).state_dict()),
            "wnorm2_end": layer_weight_norms(run.state)}


def sweep_cells(doc: dict) -> dict[tuple[str, float], list[dict]]:
    """The learning-rate sweep's artifact (`experiments.load_grid("lr-sweep")`) as (norm, lr) → its runs' rows,
    in seed order (the claims pair the cells' rows by position)."""
    return {(rows[0]["config"]["norm"], rows[0]["config"]["lr"]): sorted(rows, key=lambda r: r["config"]["seed"])
            for rows in doc["cells"].values()}


def effective_lr(row: dict, when: str = "end") -> np.ndarray:
    """η/‖w‖² of each block's layer weight at initialization (`when="init"`) or at the end of a sweep run (its
    row in the artifact): the step size that a scale-invariant weight's direction sees."""
    return row["config"]["lr"] / np.asarray(row[f"wnorm2_{when}"], dtype=np.float64)


def effective_lr_history(run: Run) -> np.ndarray:
    """η/‖W_i‖² at every probe (rows: `history["probe_step"]`; columns: layers #1, #2, …), from the weights' norms
    that the probes record (`probes.weight_norms`): the course of BN's effective learning rate over training."""
    return run.config.lr / np.asarray(run.history["wnorm2"], dtype=np.float64)


def effective_lr_ratio(a: Run, b: Run) -> np.ndarray:
    """`a`'s effective learning rates over `b`'s (`effective_lr_history`), layer by layer, at the probes both runs
    reached (a diverged run's history stops early); they must have been probed at the same steps."""
    n = min(len(a.history["probe_step"]), len(b.history["probe_step"]))
    if not np.array_equal(a.history["probe_step"][:n], b.history["probe_step"][:n]):
        raise ValueError("the two runs were probed at different steps")
    return effective_lr_history(a)[:n] / effective_lr_history(b)[:n]


# --- the extended scale (chapter 4.10): whole histories, so that the claims read them as they read the book's runs ---

# per-step and per-sample arrays that the landscape claims do not read and that would make the artifact large
_HEAVY_PREFIXES = ("step", "train_", "act")  # per step (step_act*, step, train_*) and per channel (act*_mean, _var)
_HEAVY_SUFFIXES = ("_values", "_quantiles")  # activation samples and quantiles


def history_row(run: Run) -> dict:
    """A run as the extended-scale artifact stores it: its final numbers and its history without the per-step
    and per-sample arrays (`_HEAVY_PREFIXES`, `_HEAVY_SUFFIXES`), as lists."""
    keep = {k: v for k, v in run.history.items()
            if not k.startswith(_HEAVY_PREFIXES) and not k.endswith(_HEAVY_SUFFIXES)}
    return {"final": dict(run.final), "history": {k: np.asarray(v).tolist() for k, v in keep.items()}}


def grid_runs(doc: dict) -> dict[str, list[Run]]:
    """An artifact of `history_row`s as runs (histories and final numbers; no weights): cell → runs, in order.
    The claims and tables that read book-scale runs read these the same way."""
    from .train import config_from_dict

    return {cell: [Run(config_from_dict(r["config"]), {k: np.asarray(v) for k, v in r["history"].items()},
                       r["final"], {}, r["provenance"]) for r in rows]
            for cell, rows in doc["cells"].items()}


def index_of(key: str) -> str:
    """Which steps the rows of history array `key` belong to: "step" (every training step), "eval_step" (the
    evaluations) or "probe_step" (the probes)."""
    if key in ("eval_step", "test_acc", "test_loss"):
        return "eval_step"
    if key == "step" or key.startswith(("train_", "step_")):
        return "step"
    return "probe_step"


def first_steps(run: Run, steps: int) -> Run:
    """`run` as if it had stopped after `steps` steps: its probes, evaluations and per-step records before that
    step; its final test numbers those of its last evaluation before it, its training numbers those of its last
    step (NaN where the run kept no per-step records), diverged only if it diverged before. To compare a long run
    with a short one over the same stretch of training."""
    h = run.history
    cut = {k: np.asarray(v)[np.asarray(h[index_of(k)]) < steps] for k, v in h.items()}
    final = dict(run.final)
    diverged = run.diverged and run.final["diverged_at"] < steps
    final.update(status="diverged" if diverged else "ok", diverged_at=run.final["diverged_at"] if diverged else -1,
                 steps_done=min(run.final.get("steps_done", steps), steps))
    for k in ("train_loss", "train_acc"):  # the last step's, where the run kept per-step records
        final[k] = float(cut[k][-1]) if len(cut.get(k, ())) else float("nan")
    if len(cut.get("eval_step", ())):
        final.update(test_acc=float(cut["test_acc"][-1]), test_loss=float(cut["test_loss"][-1]))
    return Run(dataclasses.replace(run.config, steps=min(steps, run.config.steps)), cut, final, run.state,
               run.provenance)


def thinned(run: Run, probe_every: int, landscape: tuple[float, ...]) -> Run:
    """`run` as if it had been probed every `probe_every` steps at the step sizes `landscape` only: a subset of its
    own probes (every probe of the result is one of `run`'s, so `probe_every` must be a multiple of the run's and
    `landscape` a subset of its step sizes). Probes change no trajectory, so this is what training the same
    configuration with the sparser probes records, up to the rounding of the effective β along a random
    direction (recomputed here over the kept step sizes, with ‖d‖ = ‖g‖). To compare probe densities."""
    cfg, h = run.config, run.history
    if probe_every % cfg.probe_every or not set(landscape) <= set(cfg.landscape):
        raise ValueError(f"probes every {probe_every} steps at {landscape} x lr are not a subset of this run's "
                         f"(every {cfg.probe_every} steps at {cfg.landscape} x lr)")
    rows = np.asarray(h["probe_step"]) % probe_every == 0
    cols = np.array([cfg.landscape.index(m) for m in landscape])
    etas = cfg.lr * np.asarray(landscape, dtype=np.float64)
    out = {k: np.asarray(v)[rows] if index_of(k) == "probe_step" else v for k, v in h.items()}
    for prefix in ("land", "rand"):
        if f"{prefix}_loss" not in h:
            continue
        out[f"{prefix}_loss"] = out[f"{prefix}_loss"][:, cols]
        out[f"{prefix}_graddiff"] = diffs = out[f"{prefix}_graddiff"][:, cols]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"{prefix}_beta"] = np.max(diffs / (etas * out[f"{prefix}_gnorm"][:, None]), axis=1)
    return Run(dataclasses.replace(cfg, probe_every=probe_every, landscape=tuple(landscape)), out, run.final,
               run.state, run.provenance)
