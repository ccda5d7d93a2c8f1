"""The book's scales (`BOOK_*`), the papers' (`PAPER_*`), and which runs each chapter shows.

`chapter_runs(3)` lists chapter 3's configurations; a chapter's first cell trains the missing ones
in parallel with `results.get_runs(chapter_runs(n))`, and its later cells fetch them one by one from
the cache. `paper_scale(cfg)` is the same experiment at the papers' scale, which
`python -m bnbook paper --chapter N` runs (hours on a GPU; days on a CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from .train import Config, config_from_dict

ARTIFACTS = Path(__file__).resolve().parent.parent / "data" / "artifacts"  # small committed results

# The landscape probes' step sizes for the VGG, as multiples of lr: seven, evenly spaced in log from ½× to 4× (the
# paper's range, Fig. 4), √2 apart, so that the maximum over them that defines the effective β is taken over more
# than a few secants. Every other one is a step size of `SPARSE_VGG`: its probes are a subset of these.
VGG_LANDSCAPE = (0.5, 2**-0.5, 1.0, 2**0.5, 2.0, 2**1.5, 4.0)

# The book's scales (chosen in chapter 3; every chapter derives its runs from these). VGG: 400 steps, probed every 10
# steps (40 probes a run, 30 of them from step 100 on, where chapter 4's claims read them). The probes change no
# trajectory; a run takes about 48 s instead of 28 s with `SPARSE_VGG`'s probes (measured two at a time on 2 cores).
BOOK_VGG = Config(
    model="vgg", arch="A", width=0.125, steps=400, batch_size=128, eval_every=100,
    probe_every=10, act_layers=(2, 5, 8), ics_layers=(3, 6), landscape=VGG_LANDSCAPE, random_direction=True,
    sharpness_every=100,
)
# The VGG probed as the book first did (every 50 steps, at ½, 1, 2 and 4× lr): the density at which chapter 4's
# extended scale was trained and committed (its probes are a subset of the book's: `analysis.thinned` reads the
# book's runs through them).
SPARSE_VGG = replace(BOOK_VGG, probe_every=50, landscape=(0.5, 1.0, 2.0, 4.0))
BOOK_MLP = Config(model="mlp", depth=3, hidden=100, init_std=0.05, batch_size=60, steps=5000, eval_every=100,
                  probe_every=50, act_layers=(3,))
BOOK_DLN = Config(
    model="dln", depth=25, hidden=10, train_size=100, lr=1e-6, steps=10000, eval_every=100,
    probe_every=100, act_layers=(9, 17), ics_layers=(9, 17), landscape=(0.01, 0.1, 1.0, 10.0, 30.0),
    random_direction=True, sharpness_every=1000,
)

# The papers' scales. VGG: Santurkar et al. train on all of CIFAR-10 for 15,000 steps at full width; the
# book keeps VGG-11 (configuration "A") so that its layer numbers mean the same at both scales. MLP: Ioffe
# & Szegedy train 50,000 steps (on MNIST; the book's MLP runs on CIFAR-10). DLN: the book's is the paper's.
PAPER_VGG = replace(BOOK_VGG, width=1.0, steps=15000, eval_every=500, probe_every=250, sharpness_every=1000)
PAPER_MLP = replace(BOOK_MLP, steps=50000, eval_every=500, probe_every=250)
PAPER_DLN = BOOK_DLN

_SCALE_FIELDS = ("arch", "width", "depth", "hidden", "init_std", "train_size", "test_size", "steps",
                 "batch_size", "eval_every", "probe_every", "sharpness_every")


def paper_scale(cfg: Config) -> Config:
    """`cfg` (norm, learning rate, seed, probes) at the paper's scale (width, steps, data, evaluation)."""
    paper = {"vgg": PAPER_VGG, "mlp": PAPER_MLP, "dln": PAPER_DLN}[cfg.model]
    return replace(cfg, **{f: getattr(paper, f) for f in _SCALE_FIELDS})


# Seeds. A claim about training rests on an ensemble: the seed varies the initialization, the data order and
# the noise, and, like another machine's rounding, it changes every trajectory. The headline VGG comparisons
# (standard vs BN at lr 0.1 and 0.5, noisy BN, and the standard network with noise; at lr 0.1 with either
# initialization) and chapter 1's MLP use 5 seeds; every other training configuration 3. (A condition is decided by the 95% confidence interval of its mean
# over the seeds, `claims.Condition`: with 3 seeds Student's t is 4.30, with 5 it is 2.78. The MLP and the noise
# runs are the cheapest, 25-30 s each; the DLN's take up to 100 s, and CI trains them only once, see .ci/same_bits.py.)
HEADLINE_SEEDS = (0, 1, 2, 3, 4)
SEEDS = (0, 1, 2)
HEADLINE = {("none", 0.1), ("batch", 0.1), ("none", 0.5), ("batch", 0.5), ("noisy", 0.1), ("noise", 0.1)}  # VGG (norm, lr)


def seeds(cfg: Config) -> tuple[int, ...]:
    """The seeds of `cfg`'s ensemble: `HEADLINE_SEEDS` for the headline VGG configurations (with either
    initialization: the He control is the headline comparison with another standard network) and the MLP, else
    `SEEDS`."""
    headline = (cfg.model == "vgg" and (cfg.norm, cfg.lr) in HEADLINE) or cfg.model == "mlp"
    return HEADLINE_SEEDS if headline else SEEDS


def ensemble(cfg: Config) -> list[Config]:
    """`cfg` once per seed of its ensemble (`seeds(cfg)`), everything else equal."""
    return [replace(cfg, seed=s) for s in seeds(cfg)]


def _vgg(norm: str, lr: float = 0.1) -> list[Config]:
    return ensemble(replace(BOOK_VGG, norm=norm, lr=lr))


def _dln(norm: str, lr: float = 1e-6) -> list[Config]:
    return ensemble(replace(BOOK_DLN, norm=norm, lr=lr))


def _each(*groups: list[Config]) -> list[Config]:
    return [c for g in groups for c in g]


_MLP = _each(*(ensemble(replace(BOOK_MLP, norm=n)) for n in ("none", "batch")))
_VGG_01 = _each(_vgg("none"), _vgg("batch"))
_VGG_05 = _each(_vgg("none", 0.5), _vgg("batch", 0.5))
_DLN = _each(*(_dln(n, lr) for lr in (1e-6, 1e-7) for n in ("none", "batch")))
_LP = ("l1", "l2", "linf")
# Chapter 4's control for the standard network's plateau: the same VGG with He initialization (N(0, 2/fan_in)),
# at lr 0.1, beside the Glorot networks of the headline comparison, on its 5 seeds: it restates the headline claims
# against BN's 5-seed ensemble (with 3 seeds, two of its four landscape claims were reproduced on one CPU and
# undecided on another, intervals at their thresholds: Student's t is 4.30 for 3 seeds, 2.78 for 5)
HE_VGG = ensemble(replace(BOOK_VGG, init="he"))
CHAPTERS: dict[int, list[Config]] = {
    1: _MLP,
    2: _MLP,
    3: _each(_VGG_01, _VGG_05, _vgg("none", 0.01), _vgg("batch", 0.01), _vgg("noisy"), _vgg("noise"), _DLN),
    4: _each(_VGG_01, _VGG_05, *(_vgg(n) for n in _LP), _DLN, *(_dln(n) for n in _LP), _vgg("none", 0.01),
             _vgg("batch", 0.01), HE_VGG),
    5: _VGG_01,
}


# Chapter 4.4's grid over what the paper leaves unstated about its deep linear network. One factor at a time
# from BOOK_DLN (lr 1e-6), each cell on SEEDS, with the standard network and BN where the factor applies to both;
# plus the standard network at larger learning rates (it sits far below its edge of stability at 1e-6). Too
# long for CI (about 30 core-minutes): `python -m bnbook grid` trains it and writes the artifact `DLN_GRID_FILE`,
# which the chapter reads; the chapter recomputes the grid's book cell from its own runs to check it.
DLN_INIT_STDS = (0.25, 0.3, 0.33, 0.35)  # N(0, std²) weights around Glorot's √(2/20) ≈ 0.316
DLN_STD_LRS = (3e-6, 1e-5, 3e-5, 1e-4)
DLN_GRID_FILE = "dln_grid.json"


def dln_grid(steps: int | None = None, seeds: tuple[int, ...] = SEEDS) -> dict[str, list[Config]]:
    """The grid's cells, in order: name → configurations (both norms where the factor applies to both, × seeds).

    `steps` overrides the runs' length (to try the command at a tiny scale); the probe densities scale with it.
    """
    base = BOOK_DLN if steps is None else replace(
        BOOK_DLN, steps=steps, eval_every=max(1, steps // 10), probe_every=max(1, steps // 10),
        sharpness_every=max(1, steps // 10) * 2)
    both, bn = ("none", "batch"), ("batch",)
    cells: dict[str, tuple[tuple[str, ...], dict]] = {
        "the book's (Glorot uniform, 100 samples, summed loss)": (both, {}),
        **{f"N(0, {s:g}²) init": (both, {"init_std": s}) for s in DLN_INIT_STDS},
        "1,000 samples": (both, {"train_size": 1000}),
        "mean loss (the sum / 100)": (both, {"reduction": "mean"}),
        "BN on the input too": (bn, {"input_norm": True}),
        "BN without γ, β": (bn, {"affine": False}),
        "probes with BN's statistics frozen at x₀": (bn, {"probe_stats": "frozen"}),
        **{f"standard at lr {lr:g}": (("none",), {"lr": lr}) for lr in DLN_STD_LRS},
    }
    return {name: [replace(base, norm=n, seed=seed, **change) for n in norms for seed in seeds]
            for name, (norms, change) in cells.items()}


# Chapter 4.9's learning-rate sweep: the book's VGG, probed as the book's runs are, standard and BN, at six learning
# rates, each on SEEDS. It tests Ioffe & Szegedy's headline (BN tolerates much larger learning rates) over a range,
# not at two points, and where each network's sharpness settles (the edge of stability is lr·λ_max = 2). Its runs
# at lr 0.1 are the chapter's own; the other 30 (28 core-minutes measured, 11 min on 2 cores) are too long for CI:
# `python -m bnbook grid lr-sweep` trains them and writes the artifact, which the chapter reads and checks against
# its own lr-0.1 runs.
VGG_SWEEP_LRS = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8)


def lr_sweep(steps: int | None = None, seeds: tuple[int, ...] = SEEDS) -> dict[str, list[Config]]:
    """The sweep's cells, in order: "none lr 0.025", …, "batch lr 0.8" → configurations (× seeds).

    `steps` overrides the runs' length (to try the command at a tiny scale); probes and evaluation then run twice,
    on 500 test images."""
    base = BOOK_VGG if steps is None else _tiny_vgg(BOOK_VGG, steps)
    return {f"{n} lr {lr:g}": [replace(base, norm=n, lr=lr, seed=s) for s in seeds]
            for n in ("none", "batch") for lr in VGG_SWEEP_LRS}


def _tiny_vgg(cfg: Config, steps: int) -> Config:
    """`cfg` cut to `steps` steps to try a grid's command: evaluated and probed twice, on 500 test images."""
    every = max(1, steps // 2)
    return replace(cfg, steps=steps, test_size=500, eval_every=every, probe_every=every, sharpness_every=every)


# The extended scale: does a verdict change with scale? VGG-11 at twice the book's width, trained 7.5× as long,
# standard and BN at lr 0.1 on SEEDS, probed as `SPARSE_VGG` every 50 steps (60 probes a run)
# and the sharpness every 250. About 50 core-minutes (26 min on 2 cores): `python -m bnbook grid extended`
# (resumable: each run checkpoints every `results.CHECKPOINT_EVERY` steps) writes the artifact chapter 4.10 reads.
EXTENDED_VGG = replace(SPARSE_VGG, width=0.25, steps=3000, eval_every=250, sharpness_every=250)


def extended(steps: int | None = None, seeds: tuple[int, ...] = SEEDS) -> dict[str, list[Config]]:
    """The extended scale's cells: "none lr 0.1", "batch lr 0.1" → configurations (× seeds). `steps` overrides
    the runs' length (to try the command at a tiny scale: then at the book's width, probed twice, on 500 test
    images)."""
    base = EXTENDED_VGG if steps is None else _tiny_vgg(replace(EXTENDED_VGG, width=BOOK_VGG.width), steps)
    return {f"{n} lr {base.lr:g}": [replace(base, norm=n, seed=s) for s in seeds] for n in ("none", "batch")}


@dataclass(frozen=True)
class Grid:
    """A set of runs too long for CI, trained by `python -m bnbook grid NAME` into a committed artifact."""

    file: str  # under ARTIFACTS
    cells: Callable[..., dict[str, list[Config]]]  # (steps=None, seeds=SEEDS) → name → configurations
    row: str  # the `analysis` function that summarizes one run for the artifact
    core_minutes: int  # about how long it trains from an empty cache
    section: str  # where the book reads it


GRIDS = {
    "dln": Grid(DLN_GRID_FILE, dln_grid, "dln_grid_row", 30, "chapter 4.4"),
    "lr-sweep": Grid("vgg_lr_sweep.json", lr_sweep, "lr_sweep_row", 33, "chapter 4.9"),
    "extended": Grid("vgg_extended.json", extended, "history_row", 50, "chapter 4.10"),
}


def grid_path(name: str) -> Path:
    """The committed artifact of grid `name` (`python -m bnbook grid NAME` writes it)."""
    return ARTIFACTS / GRIDS[name].file


def grid_command(name: str) -> str:
    """The command that writes grid `name`'s artifact."""
    return "python -m bnbook grid" + ("" if name == "dln" else f" {name}")


def write_grid(name: str, path: Path, cells: dict[str, list[Config]], command: str) -> dict:
    """Train the grid's missing runs (`results.get_runs`, cached) and write each run's summary (the grid's
    `analysis` row function), with its configuration, its own provenance (commit and machine it trained on) and
    its training time, to `path` (JSON, atomically), with the file's provenance: commit, machine, date, this
    command's wall time (`wall_time_s`; short when the runs were cached), the runs' total training time
    (`train_core_s`), the command."""
    import datetime
    import json
    import time

    from . import analysis, results
    from .data import atomic_write

    start = time.perf_counter()
    row = getattr(analysis, GRIDS[name].row)
    runs = results.get_runs([c for cfgs in cells.values() for c in cfgs])
    by_config = {r.config: r for r in runs}
    out_cells = {cell: [{"config": json.loads(c.to_json()), **row(by_config[c]),
                         "wall_time": by_config[c].final["wall_time"], "provenance": by_config[c].provenance}
                        for c in cfgs] for cell, cfgs in cells.items()}
    prov = results.provenance()
    prov.update(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), command=command,
                wall_time_s=round(time.perf_counter() - start, 1),
                train_core_s=round(sum(r.final["wall_time"] for r in runs), 1), cpu=_cpu_name())
    doc = {"provenance": prov, **({"early": analysis.DLN_EARLY} if name == "dln" else {}), "cells": out_cells}
    text = json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=True) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return doc


def load_grid(name: str, path: Path | None = None, cells: dict[str, list[Config]] | None = None) -> dict:
    """Grid `name`'s artifact, checked against the code: every cell of `cells` (default the grid's own) with
    exactly its configurations, in order. A mismatch (the grid changed since the artifact was written) is an
    error that names the fix."""
    import json

    grid = GRIDS[name]
    path = path or grid_path(name)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: `{grid_command(name)}` computes it (about {grid.core_minutes} "
                                f"core-minutes)")
    doc = json.loads(path.read_text())
    want = {cell: [json.loads(c.to_json()) for c in cfgs] for cell, cfgs in (cells or grid.cells()).items()}
    # through Config: a field added since the artifact was written takes its default, as the runs had it then
    got = {cell: [json.loads(config_from_dict(row["config"]).to_json()) for row in rows]
           for cell, rows in doc["cells"].items()}
    if list(want.items()) != list(got.items()):  # in order too: the chapter takes the first cell as the book's
        stale = sorted(set(want) ^ set(got)) or [n for n in want if want[n] != got.get(n)] or ["their order"]
        raise ValueError(f"{path} was computed for another grid (cells differ: {stale[:3]}); "
                         f"rerun `{grid_command(name)}` to recompute it")
    return doc


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or platform.machine()


def chapter_runs(chapter: int) -> list[Config]:
    """The book-scale configurations of `chapter` (1-5), in a fixed order."""
    if chapter not in CHAPTERS:
        raise ValueError(f"chapter {chapter!r} has no runs; chapters with runs: {sorted(CHAPTERS)}")
    return list(CHAPTERS[chapter])


def all_runs() -> list[Config]:
    """Every book-scale configuration, each once."""
    return list(dict.fromkeys(c for runs in CHAPTERS.values() for c in runs))


def outcome(run) -> str:
    """A run's result in one line: test and train accuracy, the DLN's final loss, or where it diverged."""
    if run.diverged:
        return f"diverged at step {run.final['diverged_at']}"
    if run.config.model == "dln":
        return f"final loss {run.final['train_loss']:.4g}"
    return f"test acc {100 * run.final['test_acc']:.2f}%, train acc {100 * run.final['train_acc']:.2f}%"


def scale_comparison(chapter: int) -> str:
    """The chapter's book-scale outcomes beside its paper-scale ones, for the runs computed here at both.

    Only reads: a run missing at either scale is listed as missing. Paper-scale runs come from
    `python -m bnbook paper --chapter N`.
    """
    from . import results  # results imports the training code; this module is imported by it only lazily

    lines, missing = [], 0
    for cfg in chapter_runs(chapter):
        paper = results.find_paper_run(paper_scale(cfg))
        if paper is None:
            missing += cfg.seed == seeds(cfg)[0]  # `paper` runs the first seed of each configuration by default
            continue
        book = results.find_run(cfg)
        where = f"{paper.provenance.get('device', '?')}, commit {paper.provenance.get('git_commit', '?')}"
        lines.append(f"{cfg.model} {cfg.norm} lr={cfg.lr:g} seed {cfg.seed}: book scale "
                     f"{outcome(book) if book else 'not computed'} | paper scale {outcome(paper)} ({where})")
    # one scale per model in the chapter (chapter 3 has VGG and DLN runs)
    scales = dict.fromkeys(f"{p.label().split(', norm')[0]}, {p.steps} steps"
                           for p in map(paper_scale, chapter_runs(chapter)))
    head = "paper scale: " + "; ".join(scales)
    if not lines:
        return (f"No paper-scale runs of chapter {chapter} on this machine ({head}). "
                f"`python -m bnbook paper --chapter {chapter}` computes them (a GPU is used if there is one).")
    tail = (f"\n({missing} of the chapter's configurations not yet computed at paper scale, first seed)"
            if missing else "")
    return head + "\n" + "\n".join(lines) + tail
