"""The book's figures, tables and the numbers in its prose: one style, one colour per normalization, the papers'
figures as functions of runs, tables the book renders as HTML, an offline interactive player, and `glue` helpers."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import HTML, Markdown
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .analysis import LANDSCAPE_NAMES
from .analysis import smooth  # noqa: F401  (re-exported: chapters call plots.smooth)
from .train import Run

# the characters of an output line that fit the book's column (80 at a 1280-px window: tests/test_render.py)
TEXT_WIDTH = 78


def fold(text: str, indent: str = "    ") -> str:
    """`text` folded to the book's column (`TEXT_WIDTH` characters), each of its lines on its own, the
    continuation lines indented by `indent`. Words are never split (at hyphens neither): a single word longer
    than the column stays whole."""
    return "\n".join(textwrap.fill(line, TEXT_WIDTH, subsequent_indent=indent, break_on_hyphens=False,
                                    break_long_words=False) if line.strip() else line for line in text.split("\n"))

LABELS = {
    "none": "Standard",
    "batch": "Standard + BatchNorm",
    "noisy": "Standard + noisy BatchNorm",
    "noise": "Standard + noise (no BN)",
    "l1": "ℓ1 norm",
    "l2": "ℓ2 norm",
    "linf": "ℓ∞ norm",
}
COLORS = {
    "none": "#1f77b4",
    "batch": "#d62728",
    "noisy": "#2ca02c",
    "noise": "#7f7f7f",
    "l1": "#9467bd",
    "l2": "#ff7f0e",
    "linf": "#8c564b",
}


def use_style() -> None:
    """The one figure style of the book (call once at the top of a chapter)."""
    plt.rcParams.update(
        {
            "figure.figsize": (7.0, 3.2),
            "figure.dpi": 150,  # the inline backend draws at this resolution: 1,050 px for a 7-inch figure
            "savefig.dpi": 150,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 10,
            "axes.labelsize": 9,
            "legend.fontsize": 8,
            "xtick.labelsize": 8,
            "ytick.labelsize": 8,
            "figure.constrained_layout.use": True,
        }
    )


def label(run: Run) -> str:
    """The legend entry of a run: its normalization and learning rate."""
    return f"{LABELS[run.config.norm]}, lr={run.config.lr:g}"


def network(run_or_config) -> str:
    """The network and its scale alone ("VGG-11 ×0.125 width"), for titles and captions that name no norm."""
    cfg = getattr(run_or_config, "config", run_or_config)
    return cfg.label().split(", norm=")[0]


def table(header: Sequence[str], rows: Sequence[Sequence], align: str | None = None) -> Markdown:
    """A table as Markdown: Jupyter shows it as a table, and the book renders it as an HTML table that wraps to
    the column (a printed table of fixed-width text scrolls sideways instead). Cells are shown with `str`;
    `align` is one of l, r, c per column (default: the first column left, the others right)."""
    if any(len(r) != len(header) for r in rows):
        raise ValueError(f"every row needs {len(header)} cells (the header's); got rows of {sorted({len(r) for r in rows})}")
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - set("lrc"):
        raise ValueError(f"align needs one of l, r, c per column ({len(header)}); got {align!r}")
    rule = {"l": ":---", "r": "---:", "c": ":---:"}

    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join(rule[a] for a in align) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return Markdown("\n".join(lines))


def verdict_counts(claims: Sequence) -> Markdown:
    """How many of `claims` (`bnbook.claims.Claim`s) have each verdict, chapter by chapter and in all, as a
    `table`: the book's verdict (`stated`, where the chapter checked it), as `bnbook.claims.summary` counts them.
    A verdict no claim has gets no row; the last row counts every claim."""
    from . import claims as claims_module  # claims imports this module

    chapters = sorted({c.chapter for c in claims})
    by_chapter = {n: claims_module.summary([c for c in claims if c.chapter == n]) for n in chapters}
    rows = [[v] + [by_chapter[n].get(v, "–") for n in chapters] + [total]
            for v, total in claims_module.summary(claims).items()]
    rows.append(["all"] + [sum(by_chapter[n].values()) for n in chapters] + [len(claims)])
    return table(["verdict"] + [f"ch. {n}" for n in chapters] + ["all"], rows)


def player(fig: Figure, draw: Callable[[int], None], frames: int, interval_ms: int = 400) -> HTML:
    """An interactive figure for the rendered book: `draw(i)` redraws `fig` as frame i; the result is a
    self-contained HTML player (slider, play, step) with every frame embedded as an image, so it works from
    disk with no server, kernel or network. Closes `fig`. Frames are drawn at 100 dpi to keep notebooks small."""
    from matplotlib.animation import FuncAnimation

    fig.set_dpi(100)
    anim = FuncAnimation(fig, lambda i: draw(i) or [], frames=frames, interval=interval_ms, blit=False)
    with plt.rc_context({"savefig.dpi": 100}):  # the player saves its frames at savefig.dpi, not the figure's
        html = anim.to_jshtml(default_mode="once", embed_frames=True)
    plt.close(fig)
    # matplotlib's player takes its button icons from a font on a CDN: offline they would be blank buttons
    html = re.sub(r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">', "", html)
    html = re.sub(r'<i class="fa fa-([a-z-]+)( fa-flip-horizontal)?"></i>',
                  lambda m: "◀" if m.group(2) else _PLAYER_ICONS.get(m.group(1), "·"), html)
    return HTML(html)


# glyphs of the Geometric Shapes block, which common fonts have (⏮ and ⏭ render as empty boxes in many)
_PLAYER_ICONS = {"minus": "−", "plus": "+", "fast-backward": "|◀◀", "step-backward": "|◀", "play": "▶",
                 "pause": "❚❚", "step-forward": "▶|", "fast-forward": "▶▶|"}


def glue_number(name: str, value: float) -> None:
    """Glue a number for the prose (`{glue:text}` name) as a Python float: MyST cannot format numpy's."""
    from myst_nb import glue

    glue(name, float(value), display=False)


def glue_range(name: str, values: Sequence[float]) -> None:
    """Glue the min and max of `values` as `{name}_lo` and `{name}_hi`: the prose's "lo–hi" over seeds."""
    glue_number(f"{name}_lo", np.min(values))
    glue_number(f"{name}_hi", np.max(values))


def span(values: Sequence[float], fmt: str) -> str:
    """"lo–hi" of `values` formatted with `fmt`, or one number where every value gives the same text."""
    lo, hi = format(float(np.min(values)), fmt), format(float(np.max(values)), fmt)
    return lo if lo == hi else f"{lo}–{hi}"


def percent(x: float, digits: int = 1) -> str:
    """A fraction as a percentage: 0.1234 -> "12.3%"."""
    return f"{100 * x:.{digits}f}%"


def below(x: float, bound: float) -> str:
    """A float-noise number as text that is the same on every machine: "< bound" when |x| is under the bound
    that the chapter asserts, else the value itself (then the chapter's assertion fails too). Rounding
    errors of 1e-16 differ in their digits from one CPU to the next; the bound they stay under does not."""
    return f"< {bound:.0e}" if abs(x) < bound else f"{x:.1e}"


def curves(runs: Sequence[Run], metric: str = "test_acc", ax: Axes | None = None, window: int = 50,
           **plot_kw) -> Axes:
    """Training curves: `train_acc`/`train_loss` per step (smoothed), `test_acc`/`test_loss` per evaluation."""
    ax = ax or plt.gca()
    for run in runs:
        h = run.history
        if metric.startswith("train"):
            x, y = h["step"] + 1, smooth(h[metric], window)
        else:
            x, y = h["eval_step"], h[metric]
        style = {"color": COLORS[run.config.norm], "label": label(run)} | plot_kw
        ax.plot(x, 100 * y if metric.endswith("acc") else y, **style)
        if run.diverged:
            ax.axvline(run.final["diverged_at"], color=style["color"], ls=":", lw=1)
    ax.set_xlabel("training step")
    ax.set_ylabel({"train_acc": "training accuracy (%)", "test_acc": "test accuracy (%)"}.get(metric, metric))
    return ax


def ridge(run: Run, layer: int, ax: Axes | None = None, every: int = 1, bins: int = 60,
          lim: float | None = None, color: str | None = None) -> Axes:
    """Histograms of layer #`layer`'s activations over training, stacked (the papers' "ridge" plots)."""
    ax = ax or plt.gca()
    values = run.history[f"act{layer}_values"][::every]
    steps = run.history["probe_step"][::every]
    lim = lim or float(np.quantile(np.abs(values), 0.99))
    edges = np.linspace(-lim, lim, bins + 1)
    centers = (edges[1:] + edges[:-1]) / 2
    color = color or COLORS[run.config.norm]
    for k, (v, s) in enumerate(zip(values[::-1], steps[::-1])):
        hist, _ = np.histogram(np.clip(v, -lim, lim), bins=edges, density=True)
        offset = len(values) - 1 - k
        y = offset + 0.9 * hist / max(hist.max(), 1e-12)
        ax.fill_between(centers, offset, y, color=color, alpha=0.35, lw=0)
        ax.plot(centers, y, color=color, lw=0.7)
    ax.set_yticks(range(len(steps)), [str(s) for s in steps])
    ax.set_ylabel("training step")
    ax.set_xlabel(f"activation of layer #{layer}")
    ax.grid(False)
    return ax


def band(runs: Sequence[Run], key: str, ax: Axes | None = None, log: bool = True) -> Axes:
    """The range over step sizes of a landscape probe (`land_loss`, `land_graddiff`, …) at each probed step."""
    ax = ax or plt.gca()
    for run in runs:
        h = run.history
        v = h[key]
        lo, hi = (v.min(axis=1), v.max(axis=1)) if v.ndim == 2 else (v, v)
        c = COLORS[run.config.norm]
        ax.fill_between(h["probe_step"], lo, hi, color=c, alpha=0.35, label=label(run))
        # markers where a probe was taken: between them the band is only an interpolation
        ax.plot(h["probe_step"], hi, color=c, lw=0.8, marker=".", ms=4)
        ax.plot(h["probe_step"], lo, color=c, lw=0, marker=".", ms=3)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    return ax


# --- chapters 1 and 2 ---


def percentile_curves(run: Run, layer: int, ax: Axes | None = None,
                      quantiles: Sequence[float] = (0.15, 0.5, 0.85), legend: bool = True, **plot_kw) -> Axes:
    """Ioffe & Szegedy's Fig. 1 (b, c): percentiles of one sigmoid input (unit 0 of layer #`layer`) over training."""
    from .analysis import unit_percentiles

    ax = ax or plt.gca()
    p = unit_percentiles(run, layer, tuple(quantiles))
    steps = run.history["probe_step"]
    color = plot_kw.pop("color", COLORS[run.config.norm])
    for k, (q, ls) in enumerate(zip(quantiles, ["--", "-", ":"] * 3)):
        ax.plot(steps, p[:, k], color=color, ls=ls, lw=1.2 if q == 0.5 else 0.9, label=f"{q:.0%}", **plot_kw)
    ax.fill_between(steps, p[:, 0], p[:, -1], color=color, alpha=0.12, lw=0)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"sigmoid input, unit 0 of layer #{layer}")
    ax.set_title(LABELS[run.config.norm])
    if legend:
        ax.legend(title="percentile", title_fontsize=8, loc="upper right")
    return ax


def bn_histograms(x: np.ndarray, y: np.ndarray, ax: Axes | None = None, bins: int = 30,
                  lim: float | None = None) -> Axes:
    """One unit over a mini-batch before (x, grey) and after (y, red) the BN transform, as histograms."""
    ax = ax or plt.gca()
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    lim = lim or float(max(np.abs(x).max(), np.abs(y).max())) * 1.05
    edges = np.linspace(-lim, lim, bins + 1)
    ax.hist(np.clip(x, -lim, lim), bins=edges, color="#7f7f7f", alpha=0.5, label="input x")
    ax.hist(np.clip(y, -lim, lim), bins=edges, color=COLORS["batch"], alpha=0.5, label="output y = BN(x)")
    for v, c in ((x.mean(), "#7f7f7f"), (y.mean(), COLORS["batch"])):
        ax.axvline(v, color=c, lw=1, ls="--")
    ax.set_xlim(-lim, lim)
    ax.set_ylabel("count in the batch")
    return ax


# --- chapter 3 ---


def ridge_grid(runs: Sequence[Run], layers: Sequence[int], every: int = 2, axes=None, bins: int = 50):
    """`ridge` for every (layer, run): one row per layer, one column per run, each with its own x range.

    Santurkar et al.'s Fig. 1(c) and Fig. 2 (right): how each layer's input distribution evolves.
    """
    if axes is None:
        _, axes = plt.subplots(len(layers), len(runs), figsize=(2.4 * len(runs), 2.1 * len(layers)), squeeze=False)
    for r, layer in enumerate(layers):
        for c, run in enumerate(runs):
            ax = axes[r][c]
            ridge(run, layer, ax=ax, every=every, bins=bins)
            if c:
                ax.set_ylabel("")
            if r == 0:
                ax.set_title(label(run), fontsize=8)
    return axes


def shift_curves(runs: Sequence[Run], layer: int, key: str = "mean", ax: Axes | None = None, window: int = 20) -> Axes:
    """The step-to-step shift of layer #`layer`'s distribution over training (`analysis.step_shift[key]`).

    `key`: "mean", "var" (absolute) or "rel_mean", "rel_var" (in units of the channel's scale); the
    curves are trailing `window`-step means, on a log scale.
    """
    from .analysis import step_shift

    ax = ax or plt.gca()
    for run in runs:
        v = step_shift(run, layer)[key]
        ax.plot(np.arange(1, len(v) + 1), smooth(v, window), color=COLORS[run.config.norm], label=label(run))
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    what = {"mean": "|Δ mean|", "var": "|Δ variance|", "rel_mean": "|Δ mean| / σ", "rel_var": "|Δ variance| / σ²"}
    ax.set_ylabel(f"layer #{layer}: {what.get(key, key)}")
    return ax


def ics_curves(runs: Sequence[Run], layer: int, key: str = "l2", ax: Axes | None = None, **plot_kw) -> Axes:
    """Internal covariate shift of layer #`layer` (Definition 2.1) at every probed step.

    `key` = "l2" (‖G − G'‖₂, log scale) or "cos" (cos∠(G, G')).
    """
    ax = ax or plt.gca()
    for run in runs:
        h = run.history
        style = {"color": COLORS[run.config.norm], "label": label(run), "marker": ".", "ms": 3, "lw": 1} | plot_kw
        ax.plot(h["probe_step"], h[f"ics{layer}_{key}"], **style)
    if key == "l2":
        ax.set_yscale("log")
        ax.set_ylabel(f"layer #{layer}: $\\|G - G'\\|_2$")
    else:
        ax.set_ylabel(f"layer #{layer}: cos$\\angle(G, G')$")
    ax.set_xlabel("training step")
    return ax


def channel_moments(run: Run, layer: int, channels: Sequence[int] = (0, 1, 2), ax: Axes | None = None,
                    which: str = "mean", steps: int | None = None, **plot_kw) -> Axes:
    """The per-step mean (or variance) of a few channels of layer #`layer`, as the training pass saw it."""
    ax = ax or plt.gca()
    v = run.history[f"step_act{layer}_{which}"][:steps]
    for k, ch in enumerate(channels):
        style = {"color": COLORS[run.config.norm], "lw": 0.8, "alpha": 1.0 - 0.25 * k} | plot_kw
        ax.plot(np.arange(len(v)), v[:, ch], label=f"{LABELS[run.config.norm]}" if k == 0 else None, **style)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"layer #{layer}: channel {which}")
    return ax


# --- chapter 4 ---


def edge_of_stability(runs: Sequence[Run], ax: Axes, scale: str = "curvature") -> None:
    """Dashed line at the edge of stability of each learning rate in `runs`: a curvature of 2/lr, or, with
    `scale="lr"` (curvatures multiplied by lr), the value 2. Gradient descent on a quadratic with curvature
    λ along its step diverges when lr·λ > 2; in practice training raises the sharpness until lr·λ_max ≈ 2
    and then hovers there (Cohen et al. 2021)."""
    if scale == "lr":
        ax.axhline(2.0, color="k", ls="--", lw=0.8, alpha=0.7, label="2: edge of stability", zorder=1)
        return
    for i, lr in enumerate(sorted({r.config.lr for r in runs})):
        ax.axhline(2 / lr, color="k", ls=(0, (4, 2 + 2 * i)), lw=0.8, alpha=0.7, label=f"2/lr, lr={lr:g}", zorder=1)


def landscape_panels(runs: Sequence[Run], prefix: str = "land", axes: Sequence[Axes] | None = None,
                     log_loss: bool = True) -> Sequence[Axes]:
    """Santurkar et al.'s Fig. 4 for `runs`: (a) loss range, (b) gradient predictiveness, (c) effective β.

    (a) and (b) are bands over the probes' step sizes at each probed step (`band`), (c) one value per
    probed step. `prefix` "land" probes along the gradient, "rand" along a random direction.
    """
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(10, 3.0))
    band(runs, f"{prefix}_loss", axes[0], log=log_loss)
    band(runs, f"{prefix}_graddiff", axes[1])
    for run in runs:
        h = run.history
        axes[2].plot(h["probe_step"], h[f"{prefix}_beta"], color=COLORS[run.config.norm], marker=".", label=label(run))
    if prefix == "land":  # the edge concerns the direction the step takes, not a random one
        edge_of_stability(runs, axes[2])
    axes[2].set_yscale("log")
    axes[2].set_xlabel("training step")
    axes[0].set_ylabel("loss $L(x_0 - \\eta d)$ (range over $\\eta$)")
    axes[1].set_ylabel("$\\|\\nabla L(x_0 - \\eta d) - g\\|_2$ (range)")
    axes[2].set_ylabel("effective $\\beta$-smoothness")
    axes[0].set_title("(a) loss landscape")
    axes[1].set_title("(b) gradient predictiveness")
    axes[2].set_title("(c) effective β-smoothness")
    return axes


def graddiff_vs_eta(run: Run, ax: Axes | None = None, prefix: str = "land", cmap: str = "viridis",
                    colorbar: bool = True, every: int = 1) -> Axes:
    """‖∇L(x_0 − ηd) − g‖₂ against the step size η, one curve per probed training step (colour = step).

    `every` = k draws every k-th probe only (a run with a hundred probes is unreadable otherwise).
    """
    ax = ax or plt.gca()
    h = run.history
    etas = run.config.lr * np.asarray(run.config.landscape, dtype=np.float64)
    steps = h["probe_step"]
    cm = plt.get_cmap(cmap)
    norm = plt.Normalize(0, max(run.config.steps, 1))
    for s, row in zip(steps[::every], h[f"{prefix}_graddiff"][::every]):
        ax.plot(etas, row, color=cm(norm(s)), lw=0.9, marker=".", ms=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(etas, [f"{e:.3g}" for e in etas], minor=False)
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.set_xlabel("step size $\\eta$")
    ax.set_ylabel("$\\|\\nabla L(x_0 - \\eta d) - g\\|_2$")
    ax.set_title(LABELS[run.config.norm])
    if colorbar:
        sm = plt.cm.ScalarMappable(norm=norm, cmap=cm)
        ax.figure.colorbar(sm, ax=ax, label="training step", pad=0.01)
    return ax


def landscape_lines(runs: Sequence[Run], quantity: str, ax: Axes | None = None, prefix: str = "land") -> Axes:
    """One line per run: a landscape quantity per probed step (`bnbook.analysis.landscape_per_probe`)."""
    from .analysis import landscape_per_probe

    ax = ax or plt.gca()
    for run in runs:
        ax.plot(run.history["probe_step"], landscape_per_probe(run, quantity, prefix),
                color=COLORS[run.config.norm], label=LABELS[run.config.norm], lw=1.0)
    if quantity == "beta":
        edge_of_stability(runs, ax)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel({"loss_range": "loss range over $\\eta$", "graddiff": "max$_\\eta$ $\\|\\nabla L(x(\\eta)) - g\\|_2$",
                   "beta": "effective $\\beta$-smoothness"}[quantity])
    return ax


def landscape_comparison(t: dict[str, dict[str, float]], paper: dict[str, str],
                         who: Sequence[str] = ("standard", "BN")) -> Markdown:
    """`bnbook.analysis.landscape_table(a, b)` as a table, one row per quantity beside the paper's reading
    (`paper`: quantity → text): the medians of a and b, their ratio, the worst probes, and how often a is the
    rougher one. `who` names a and b in the header."""
    a, b = who
    header = ["quantity", "paper", f"median, {a}", f"median, {b}", "ratio", f"worst, {a}", f"worst, {b}",
              f"{a} rougher"]
    rows = [[LANDSCAPE_NAMES.get(q, q), paper[q], f"{r['median_a']:.3g}", f"{r['median_b']:.3g}", f"{r['ratio']:.3g}",
             f"{r['max_a']:.3g}", f"{r['max_b']:.3g}", f"{100 * r['wins']:.0f}% of probes"] for q, r in t.items()]
    return table(header, rows, align="ll" + "r" * 6)


SHARPNESS_LINES = {  # what `sharpness_over_training` draws: history key → (label, line style)
    "sharp_lmax": ("$\\lambda_{\\max}$ (top Hessian eigenvalue)", "-"),
    "sharp_grad": ("$g^\\top H g/\\|g\\|^2$ (curvature along $g$)", "--"),
    "land_beta": ("effective $\\beta$ (probes' secants)", ":"),
}


def sharpness_over_training(ensembles: Sequence[Sequence[Run]], ax: Axes | None = None,
                            keys: Sequence[str] = tuple(SHARPNESS_LINES)) -> Axes:
    """lr × each curvature in `keys` over training, one colour per ensemble (a normalization): the median
    over the seeds as a line, every seed as faint dots, and the edge of stability at 2.

    Only the probe steps where the sharpness probe ran (`Config.sharpness_every`) are drawn. A negative
    curvature along g (the standard network's saddles) has no place on the log axis and is left out.
    """
    from .analysis import sharpness_steps

    ax = ax or plt.gca()
    for runs in ensembles:
        cfg = runs[0].config
        steps = sorted({int(t) for r in runs for t in sharpness_steps(r)})
        for key in keys:
            text, ls = SHARPNESS_LINES[key]
            vals = np.full((len(runs), len(steps)), np.nan)  # a run that stopped early leaves NaN
            for i, r in enumerate(runs):
                at = np.isin(r.history["probe_step"], steps)
                cols = np.searchsorted(steps, r.history["probe_step"][at])
                vals[i, cols] = cfg.lr * np.asarray(r.history[key], dtype=np.float64)[at]
            vals[~(vals > 0)] = np.nan
            seen = np.isfinite(vals).any(axis=0)
            med = np.full(len(steps), np.nan)
            med[seen] = np.nanmedian(vals[:, seen], axis=0)
            ax.plot(steps, med, color=COLORS[cfg.norm], ls=ls, lw=1.2, marker=".",
                    label=f"{LABELS[cfg.norm]}: {text}")
            for v in vals:
                ax.plot(steps, v, color=COLORS[cfg.norm], ls="none", marker=".", ms=2.5, alpha=0.35)
    edge_of_stability([r for runs in ensembles for r in runs], ax, scale="lr")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("lr × curvature")
    return ax


def dln_grid(doc: dict, quantities: Sequence[tuple[str, str]], paper: dict[str, dict[str, float]] | None = None,
             axes: Sequence[Axes] | None = None) -> Sequence[Axes]:
    """Chapter 4.4's grid (`experiments.load_grid("dln")`): one panel per (summary key, title) in `quantities`, one
    row per cell, every seed a marker, coloured by norm, on a log axis; a diverged run's value is drawn at the
    panel's right edge as an open marker. `paper`: {key: {norm: value}} drawn as dashed vertical lines."""
    cells = list(doc["cells"])
    if axes is None:
        _, axes = plt.subplots(1, len(quantities), figsize=(3.4 * len(quantities), 0.33 * len(cells) + 1.2),
                               sharey=True, squeeze=False)
        axes = axes[0]
    for ax, (key, title) in zip(axes, quantities):
        finite = [r["summary"][key] for rows in doc["cells"].values() for r in rows
                  if np.isfinite(r["summary"][key]) and r["summary"][key] > 0]
        edge = max(finite) * 10 if finite else 1.0
        for y, name in enumerate(cells):
            for r in doc["cells"][name]:
                norm, v = r["config"]["norm"], r["summary"][key]
                off = 0.12 if norm == "batch" else -0.12
                bad = not (np.isfinite(v) and v > 0) or np.isfinite(r["summary"]["diverged_at"])
                ax.plot(edge if not (np.isfinite(v) and v > 0) else v, y + off, "o", ms=4.5,
                        color=COLORS[norm], mfc="none" if bad else COLORS[norm], alpha=0.85)
        for norm, v in (paper or {}).get(key, {}).items():
            ax.axvline(v, color=COLORS[norm], ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_title(title)
    axes[0].set_yticks(range(len(cells)), cells)
    axes[0].invert_yaxis()
    for norm in ("none", "batch"):
        axes[0].plot([], [], "o", color=COLORS[norm], label=LABELS[norm])
    axes[0].plot([], [], "o", color="k", mfc="none", label="diverged")
    axes[0].legend(loc="lower left", fontsize=7)
    return axes


def ics_vs_edge(doc: dict, layer: int = 17, ax: Axes | None = None) -> Axes:
    """Every run of the DLN grid (`experiments.load_grid("dln")`) that did not diverge: its median cos(G, G′) at
    layer #`layer` (chapter 3's ICS) against its median lr·β along the gradient (the descent lemma's 2: dotted).
    The frozen-statistics cell is left out: its runs are the book cell's, with β measured another way."""
    ax = ax or plt.subplots(figsize=(4.6, 3.0))[1]
    for rows in doc["cells"].values():
        for r in rows:
            s = r["summary"]
            if (np.isfinite(s["diverged_at"]) or not np.isfinite(s["lr_beta_median"])
                    or r["config"]["probe_stats"] == "frozen"):
                continue
            ax.plot(s["lr_beta_median"], s[f"ics{layer}_cos_median"], "o", ms=4, alpha=0.8,
                    color=COLORS[r["config"]["norm"]])
    ax.axvline(2.0, color="k", lw=1, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("median lr·β along the gradient")
    ax.set_ylabel(f"median cos(G, G′), layer #{layer}")
    for norm in ("none", "batch"):
        ax.plot([], [], "o", color=COLORS[norm], label=LABELS[norm])
    ax.legend(loc="lower left", fontsize=7)
    return ax


def lr_sweep(sweep: dict, axes: Sequence[Axes], paper: dict[tuple[str, float], float] | None = None) -> None:
    """Chapter 4.9's learning-rate sweep (`analysis.sweep_cells` of its artifact), one colour per normalization:
    (0) final test accuracy, (1) median lr·λ_max from `claims.EOS_SINCE` on, with the edge of stability at 2,
    (2) the first layer's ‖w‖² at the end over its ‖w‖² at initialization (BN's effective learning rate η/‖w‖²
    falls by this factor). Each seed a dot, the median a line; `paper`: (norm, lr) → the paper's test accuracy."""
    from .claims import CHANCE, sweep_accuracy, sweep_sharpness

    lrs = sorted({lr for _, lr in sweep})
    stats = {"acc": lambda r: 100 * sweep_accuracy(r), "edge": sweep_sharpness,
             "growth": lambda r: r["wnorm2_end"][0] / r["wnorm2_init"][0]}
    for ax, key in zip(axes, stats):
        for norm in ("none", "batch"):
            per = [[stats[key](r) for r in sweep[norm, lr]] for lr in lrs]
            ax.plot(lrs, [np.median(v) for v in per], color=COLORS[norm], lw=1.2, label=LABELS[norm])
            for lr, v in zip(lrs, per):
                ax.plot([lr] * len(v), v, color=COLORS[norm], ls="none", marker=".", ms=4, alpha=0.6)
        ax.set_xscale("log")
        ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("learning rate")
    axes[0].axhline(100 * CHANCE, color="0.5", ls=":", lw=0.8, label="chance")
    for (norm, lr), acc in (paper or {}).items():
        axes[0].plot([lr], [acc], color=COLORS[norm], marker="*", ms=9, ls="none", mec="k", mew=0.5)
    axes[0].set_ylabel("final test accuracy (%)")
    edge_of_stability([], axes[1], scale="lr")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("median lr·λ_max")
    axes[2].axhline(1, color="0.5", ls=":", lw=0.8)
    axes[2].set_ylabel("layer 1: ‖w‖² end / start")


def effective_lr_curves(runs: Sequence[Run], ax: Axes | None = None, over: Sequence[Run] | None = None) -> Axes:
    """Each layer's effective learning rate η/‖W_i‖² over training (`analysis.effective_lr_history`), the median over
    the seeds `runs`, one line per layer (darker: deeper). With `over` (another ensemble, paired by seed), the
    ratio of the two ensembles' effective rates instead, seed by seed, then the median."""
    from .analysis import effective_lr_history, effective_lr_ratio

    ax = ax or plt.gca()
    if over is None:
        curves = [effective_lr_history(r) for r in runs]
    else:
        by_seed = {r.config.seed: r for r in over}
        curves = [effective_lr_ratio(r, by_seed[r.config.seed]) for r in runs if r.config.seed in by_seed]
    n = min(len(c) for c in curves)  # a diverged run has fewer probes
    med = np.median(np.stack([c[:n] for c in curves]), axis=0)
    steps = runs[0].history["probe_step"][:n]
    shades = plt.get_cmap("viridis")(np.linspace(0.9, 0.1, med.shape[1]))
    for i in range(med.shape[1]):
        ax.plot(steps, med[:, i], color=shades[i], lw=1.1, label=f"layer {i + 1}")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    return ax
