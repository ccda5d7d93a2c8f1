"""The one training loop of the book: plain SGD at a constant learning rate, as in both papers.

A run is described completely by a frozen `Config`; `train(config)` returns a `Run` (histories as
arrays, final numbers, trained weights). Use `bnbook.results.get_run(config)` from notebooks: it
returns the cached run when there is one and trains (and caches) it otherwise.

The book's shared scales are the `BOOK_*` configs in `bnbook.experiments`; chapters derive their runs from
them with `dataclasses.replace(BOOK_VGG, norm="batch", lr=0.5)`, which is how runs are shared between chapters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import data as bdata
from . import models, probes
from .norms import NORMS, batch_moments


@dataclass(frozen=True)
class Config:
    """Everything that determines a training run. Two equal configs give bit-identical runs."""

    model: str = "vgg"  # "vgg" (CIFAR-10), "mlp" (CIFAR-10, flattened), "dln" (synthetic regression)
    norm: str = "none"  # one of bnbook.norms.NORMS
    lr: float = 0.1
    steps: int = 1000
    batch_size: int = 128  # ignored by "dln", which uses full-batch gradient descent
    seed: int = 0
    arch: str = "A"  # VGG configuration: "A" (VGG-11) or "D" (VGG-16)
    width: float = 0.125  # VGG channel multiplier
    depth: int = 3  # mlp: hidden layers; dln: linear layers
    hidden: int = 100  # mlp: units per hidden layer; dln: width
    init_std: float = 0.0  # 0 → Glorot uniform (the paper's); > 0 → N(0, init_std²)
    init: str = "glorot"  # vgg: "glorot" (the paper's) or "he" (N(0, 2/fan_in): chapter 4's control)
    train_size: int = 50000  # the first N training images (CIFAR-10) or the N samples (dln)
    test_size: int = 10000  # the first N test images used for evaluation
    augment: bool = False  # random crop + flip; the paper used none
    eval_every: int = 100  # evaluate on the test split every N steps (and at the end)
    probe_every: int = 50  # run the probes below every N steps (0: never); none are on by default
    act_layers: tuple[int, ...] = ()  # layers #i whose activation statistics are recorded (see below)
    ics_layers: tuple[int, ...] = ()  # layers #i whose ICS (Definition 2.1) is measured
    landscape: tuple[float, ...] = ()  # step sizes, as multiples of lr, for the landscape probes
    random_direction: bool = False  # also probe along a random direction of the gradient's norm
    sharpness_every: int = 0  # every N steps (a multiple of probe_every; 0: never), the Hessian's top eigenvalue
    # the deep linear network's unstated choices (chapter 4's grid): the loss summed or averaged over samples,
    # BN on the input as well, BN without γ and β, and the landscape probes with BN's statistics frozen at x₀
    reduction: str = "sum"  # dln: "sum" (the paper's ‖W x − A x‖²) or "mean" (divided by the sample count)
    input_norm: bool = False  # dln: the norm also on the input, before W_1
    affine: bool = True  # norm "batch": learned γ and β (False: fixed γ = 1, β = 0)
    probe_stats: str = "batch"  # landscape probes: "batch" (BN recomputes its statistics at each x(η)) or "frozen"

    def __post_init__(self) -> None:
        problems = []
        if self.model not in models.MODELS:
            problems.append(f"model={self.model!r} is not one of {models.MODELS}")
        if self.norm not in NORMS:
            problems.append(f"norm={self.norm!r} is not one of {NORMS}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr={self.lr!r} must be a finite number > 0")
        for name in ("steps", "eval_every", "probe_every", "sharpness_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)!r} must be an integer >= 0")
        for name in ("batch_size", "depth", "hidden", "train_size", "test_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)!r} must be an integer >= 1")
        if self.model != "dln" and isinstance(self.batch_size, int) and self.batch_size > self.train_size:
            problems.append(f"batch_size={self.batch_size} exceeds train_size={self.train_size}")
        if self.model == "vgg" and self.arch not in models.VGG_CONFIGS:
            problems.append(f"arch={self.arch!r} is not one of {tuple(models.VGG_CONFIGS)}")
        if self.init not in models.INITS or (self.init == "he" and (self.model != "vgg" or self.init_std)):
            problems.append(f"init={self.init!r} must be one of {models.INITS}; 'he' is for model 'vgg' without "
                            f"init_std")
        if not self.width > 0 or self.init_std < 0:
            problems.append(f"width={self.width!r} must be > 0 and init_std={self.init_std!r} >= 0")
        if self.sharpness_every and (not self.probe_every or self.sharpness_every % self.probe_every):
            problems.append(f"sharpness_every={self.sharpness_every!r} must be a multiple of probe_every="
                            f"{self.probe_every!r} (the sharpness probe runs at probe steps)")
        if self.reduction not in ("sum", "mean") or (self.reduction == "mean" and self.model != "dln"):
            problems.append(f"reduction={self.reduction!r} must be 'sum' or 'mean' ('mean' for model 'dln' only: the "
                            f"classifiers' cross-entropy is always averaged)")
        if self.input_norm and (self.model != "dln" or self.norm == "none"):
            problems.append("input_norm=True is for model 'dln' with a norm")
        if not self.affine and (self.norm != "batch" or self.model != "dln"):
            problems.append(f"affine=False is for model 'dln' with norm 'batch' only, got model={self.model!r}, "
                            f"norm={self.norm!r}")
        if self.probe_stats not in ("batch", "frozen"):
            problems.append(f"probe_stats={self.probe_stats!r} must be 'batch' or 'frozen'")
        elif self.probe_stats == "frozen" and (self.norm not in ("batch", "noisy") or not self.landscape):
            problems.append("probe_stats='frozen' needs a BN norm ('batch' or 'noisy') and landscape probes "
                            "(it freezes BN's statistics in them; elsewhere it would change nothing)")
        if any(not (m > 0 and math.isfinite(m)) for m in self.landscape):
            problems.append(f"landscape={self.landscape!r}: step-size multipliers must be finite and > 0")
        n_layers = self.num_layers()
        for name in ("act_layers", "ics_layers"):
            bad = [i for i in getattr(self, name) if not 1 <= i <= n_layers]
            if bad:
                problems.append(f"{name}={getattr(self, name)!r}: layers are numbered 1..{n_layers} here")
        if problems:
            raise ValueError("invalid Config: " + "; ".join(problems))

    def to_json(self) -> str:
        """The configuration as canonical JSON (sorted keys): what cache keys and checkpoints identify it by."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def num_layers(self) -> int:
        """How many numbered layers (blocks) the model has."""
        if self.model == "vgg":
            return sum(v != "M" for v in models.VGG_CONFIGS.get(self.arch, []))
        return self.depth

    def label(self) -> str:
        """A short human-readable description of the scale, to print beside every result."""
        init = f", N(0, {self.init_std:g}²) init" if self.init_std else ", He init" if self.init == "he" else ""
        if self.model == "vgg":
            net = f"VGG-{ {'A': 11, 'D': 16}[self.arch] } ×{self.width:g} width{init}"
            data = f"{self.train_size // 1000}k CIFAR-10 train images, batch {self.batch_size}"
        elif self.model == "mlp":
            net = f"MLP {self.depth}×{self.hidden} sigmoid{init}"
            data = f"{self.train_size // 1000}k CIFAR-10 train images, batch {self.batch_size}"
        else:
            extra = "".join([", mean loss" if self.reduction == "mean" else "", ", input BN" if self.input_norm else "",
                             ", BN without γ, β" if not self.affine else "",
                             ", probes with frozen BN statistics" if self.probe_stats == "frozen" else ""])
            net = f"DLN {self.depth}×{self.hidden}{init}{extra}"
            data = f"{self.train_size} Gaussian samples, full batch"
        return f"{net}, norm={self.norm}, lr={self.lr:g}, {self.steps} steps, {data}, seed {self.seed}"


# The book's numbers are computed with one CPU thread per run: how reductions are split across threads
# changes the last bits of a sum, and over a thousand steps those bits become visible digits. One thread
# makes them independent of the machine's core count; the cores train several runs at once instead
# (`bnbook.results.get_runs`), which on 2 cores is 1.3× (VGG) to 2× (DLN) faster than 2 threads per run.
THREADS = 1

@dataclass
class Run:
    """The outcome of one training run: histories as arrays, final numbers, trained weights."""

    config: Config
    history: dict[str, np.ndarray]
    final: dict[str, Any]
    state: dict[str, Tensor] = field(repr=False)
    provenance: dict[str, Any] = field(default_factory=dict)

    def model(self) -> nn.Module:
        """The trained model, in eval mode."""
        m = build_model(self.config)
        m.load_state_dict(self.state)
        return m.eval()

    @property
    def diverged(self) -> bool:
        return self.final["status"] == "diverged"


def build_model(cfg: Config) -> nn.Module:
    """The freshly initialized model that `cfg` trains."""
    init_std = cfg.init_std or None
    if cfg.model == "vgg":
        return models.vgg(cfg.arch, cfg.width, cfg.norm, seed=cfg.seed, init_std=init_std, init=cfg.init)
    if cfg.model == "mlp":
        return models.mlp(hidden=cfg.hidden, depth=cfg.depth, norm=cfg.norm, seed=cfg.seed, init_std=init_std)
    return models.deep_linear(cfg.depth, cfg.hidden, cfg.norm, seed=cfg.seed, init_std=init_std,
                              input_norm=cfg.input_norm, affine=cfg.affine)


def squared_error(pred: Tensor, target: Tensor) -> Tensor:
    """‖W x − A x‖² summed over outputs and samples: the deep linear network's loss in the paper."""
    return (pred - target).pow(2).sum()


def mean_squared_error(pred: Tensor, target: Tensor) -> Tensor:
    """`squared_error` divided by the number of samples (the other reading of the paper's loss)."""
    return squared_error(pred, target) / len(pred)


REGRESSION_LOSSES = (squared_error, mean_squared_error)


def task(cfg: Config) -> tuple[Tensor, Tensor, Tensor, Tensor, Any]:
    """(train inputs, train targets, test inputs, test targets, loss function) for `cfg`."""
    if cfg.model == "dln":
        x, y, _ = bdata.linear_regression_data(cfg.train_size, cfg.hidden, seed=cfg.seed)
        return x, y, x, y, squared_error if cfg.reduction == "sum" else mean_squared_error
    xtr, ytr = bdata.load_cifar10("train")
    xte, yte = bdata.load_cifar10("test")
    if cfg.train_size > len(xtr) or cfg.test_size > len(xte):
        raise ValueError(f"train_size/test_size exceed CIFAR-10's {len(xtr)}/{len(xte)} images")
    return xtr[: cfg.train_size], ytr[: cfg.train_size], xte[: cfg.test_size], yte[: cfg.test_size], F.cross_entropy


def show_progress() -> bool:
    """Progress bars only in an interactive terminal, never in CI or in notebook outputs."""
    return sys.stderr.isatty() and not os.environ.get("CI")


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Any, batch: int = 250) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` in eval mode; for the DLN (regression), (its loss, NaN).

    Sums accumulate on the device (the loss in float64, as a Python float would) and are read once.
    """
    was_training = model.training
    model.eval()
    if loss_fn in REGRESSION_LOSSES:  # the DLN's samples in one pass: its loss is a sum (or mean) over all of them
        loss = float(loss_fn(model(x), y).double())
        model.train(was_training)
        return loss, math.nan
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for i in range(0, len(x), batch):
        out = model(x[i : i + batch])
        total += F.cross_entropy(out, y[i : i + batch], reduction="sum").double()
        correct += (out.argmax(1) == y[i : i + batch]).sum()
    model.train(was_training)
    return total.item() / len(x), int(correct.item()) / len(x)


@contextlib.contextmanager
def _recording_shift(model: nn.Module, layers: tuple[int, ...], shift: dict[str, list[np.ndarray]]):
    """Append the per-channel mean and variance of each layer's norm output during one forward pass."""

    def record(i: int):
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            var, mean = batch_moments(output.detach())
            shift[f"step_act{i}_mean"].append(mean.cpu().numpy())
            shift[f"step_act{i}_var"].append(var.cpu().numpy())
        return hook

    hooks = [model.blocks[i - 1].norm.register_forward_hook(record(i)) for i in layers]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def run_probes(cfg: Config, model: nn.Module, loss_fn: Any, x: Tensor, y: Tensor, step: int) -> dict[str, Any]:
    """Every probe `cfg` asks for, at the current parameters and batch (none changes the trajectory)."""
    out: dict[str, Any] = {"wnorm2": probes.weight_norms(model)}
    if cfg.act_layers:
        out.update(probes.activation_stats(model, x, cfg.act_layers))
    # ICS and both landscape probes start from the same gradient: computed once
    shared = cfg.ics_layers or cfg.landscape or cfg.sharpness_every
    base = probes.base_gradient(model, loss_fn, x, y) if shared else None
    if cfg.ics_layers:
        out.update(probes.ics(model, loss_fn, x, y, cfg.lr, cfg.ics_layers, base=base))
    if cfg.landscape:
        frozen = cfg.probe_stats == "frozen"
        out.update(probes.landscape(model, loss_fn, x, y, cfg.lr, cfg.landscape, base=base, frozen=frozen))
        if cfg.random_direction:
            out.update(probes.landscape(model, loss_fn, x, y, cfg.lr, cfg.landscape, "random", seed=step,
                                        prefix="rand", base=base, frozen=frozen))
    if cfg.model == "dln" and cfg.norm in ("none", "batch"):  # ten singular values: nothing beside the probes above
        m = probes.end_to_end(model, x)  # a diverging run's is not finite, and LAPACK's SVD must not see it
        out["e2e_sv"] = torch.linalg.svdvals(m).numpy() if torch.isfinite(m).all() else np.full(len(m), np.nan)
    if cfg.sharpness_every:  # at the probe steps in between: NaN, so that every probe row has the same keys
        due = step % cfg.sharpness_every == 0
        sharp = probes.sharpness(model, loss_fn, x, y, seed=step, base=base) if due else None
        out.update(sharp or {k: np.float64(np.nan) for k in probes.SHARPNESS_KEYS})
    return out


def _save_checkpoint(path: Path, cfg: Config, step: int, model: nn.Module, gens: list[torch.Generator],
                     log: dict[str, Any], elapsed: float) -> None:
    """Everything needed to continue after `step` steps, as tensors only (loadable with weights_only)."""
    ckpt = {
        "config": cfg.to_json(),
        "step": step,
        "elapsed": elapsed,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "generators": [g.get_state() for g in gens],
        "losses": torch.from_numpy(log["losses"]),
        "accs": torch.from_numpy(log["accs"]),
        "evals": torch.tensor(log["evals"], dtype=torch.float64).reshape(-1, 3),
        "probe_steps": torch.tensor(log["probe_steps"], dtype=torch.int64),
        "probe_rows": [{k: torch.from_numpy(np.asarray(v)) for k, v in r.items()} for r in log["probe_rows"]],
        "shift": {k: [torch.from_numpy(v) for v in vs] for k, vs in log["shift"].items()},
    }
    bdata.atomic_write(path, lambda f: torch.save(ckpt, f))


def _load_checkpoint(path: Path, cfg: Config, model: nn.Module, gens: list[torch.Generator],
                     log: dict[str, Any]) -> tuple[int, float]:
    """Restore a checkpoint written by `_save_checkpoint` into model, generators and log; (step, elapsed)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say so, never resume from it silently
        raise RuntimeError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}); delete it to start over") from e
    if ckpt["config"] != cfg.to_json():
        raise ValueError(f"checkpoint {path} belongs to another configuration; delete it or pass another path")
    model.load_state_dict(ckpt["model"])
    for g, state in zip(gens, ckpt["generators"], strict=True):
        g.set_state(state)
    step = int(ckpt["step"])
    log["losses"][:step] = ckpt["losses"].numpy()[:step]
    log["accs"][:step] = ckpt["accs"].numpy()[:step]
    log["evals"] = [(int(a), float(b), float(c)) for a, b, c in ckpt["evals"].tolist()]
    log["probe_steps"] = ckpt["probe_steps"].tolist()
    log["probe_rows"] = [{k: v.numpy() for k, v in r.items()} for r in ckpt["probe_rows"]]
    log["shift"] = {k: [v.numpy() for v in vs] for k, vs in ckpt["shift"].items()}
    return step, float(ckpt["elapsed"])


def _device_batches(order: Any, device: str, group: int) -> Any:
    """The index batches of `order`, on `device`. On a GPU, `group` batches at a time (an epoch) are copied
    in one transfer that does not wait, instead of a blocking host-to-device copy at every step."""
    if device == "cpu":
        yield from order
        return
    while True:
        chunk = torch.stack([next(order) for _ in range(group)])
        yield from chunk.pin_memory().to(device, non_blocking=True).unbind(0)


def train(cfg: Config, progress: bool | None = None, device: str = "cpu", threads: int = THREADS,
          checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 500, tf32: bool = False,
          sync_every: int | None = None) -> Run:
    """Train `cfg` from scratch with plain SGD; deterministic on a given machine (same seed, same bits).

    For each layer in `act_layers`, the per-channel mean and variance of the norm's output in the
    training forward pass itself are recorded at every step (`step_act{i}_mean`, `step_act{i}_var`,
    steps × channels): the step-to-step distribution shift of Santurkar et al.'s appendix, at no extra
    cost; the probes add quantiles and histogram samples every `probe_every` steps.
    A non-finite loss stops the run: it is recorded as `final["status"] == "diverged"` with the step,
    and the histories up to that step are kept.

    `checkpoint`: a file to save the state to every `checkpoint_every` steps (atomically) and to resume
    from if it exists; a resumed run is bit-identical to an uninterrupted one. The caller deletes it
    once the run is saved. `device` and `threads`: where the model and data live and how many CPU
    threads it may use (the book's numbers: CPU, `THREADS`; paper-scale runs: a GPU if there is one).
    `tf32`: allow TensorFloat-32 matrix products on a GPU (off: they change the gradients the book
    measures). `sync_every`: read the per-step losses from the device every N steps (default: every step
    on the CPU, every `eval_every` steps elsewhere); the histories are the same, and a divergence is
    recorded at the step where it happened.
    """
    torch.set_num_threads(threads)
    if device.startswith("cuda"):  # TF32 rounds matmul inputs to 10 mantissa bits: it changes the gradients probed
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    start = time.perf_counter()
    xtr, ytr, xte, yte, loss_fn = (t.to(device) if isinstance(t, Tensor) else t for t in task(cfg))
    model = build_model(cfg)
    probes.place_noise_generators(model, device)
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.0, foreach=True)  # one op for all params
    full_batch = cfg.model == "dln"
    order = None if full_batch else bdata.batches(len(xtr), cfg.batch_size, cfg.seed)
    aug_gen = torch.Generator(device).manual_seed(cfg.seed + 1)
    gens = [aug_gen, *probes.noise_generators(model)]
    regression = loss_fn in REGRESSION_LOSSES

    log: dict[str, Any] = {
        "losses": np.full(cfg.steps, np.nan), "accs": np.full(cfg.steps, np.nan), "evals": [],
        "probe_steps": [], "probe_rows": [],
        # the training forward pass's own per-channel moments, every step (see the docstring)
        "shift": {f"step_act{i}_{s}": [] for i in cfg.act_layers for s in ("mean", "var")},
    }
    first, elapsed_before = 0, 0.0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        first, elapsed_before = _load_checkpoint(ckpt_path, cfg, model, gens, log)
        for _ in range(first if order is not None else 0):  # the batch order is replayed, not stored
            next(order)
    if order is not None:
        order = _device_batches(order, device, len(xtr) // cfg.batch_size)
    losses, accs, evals, shift = log["losses"], log["accs"], log["evals"], log["shift"]
    # Per-step numbers stay on the device and are read every `sync_every` steps: on a GPU, reading a
    # number waits for every queued kernel, so no step does. On the CPU reading is free: every step,
    # so a non-finite loss stops the run before its update, exactly where it appeared.
    if sync_every is None:
        sync_every = 1 if device == "cpu" else max(1, cfg.eval_every or 100)
    elif not (isinstance(sync_every, int) and sync_every >= 1):
        raise ValueError(f"sync_every={sync_every!r} must be an integer >= 1")
    step_loss = torch.full((cfg.steps,), math.nan, device=device)
    step_acc = torch.full((cfg.steps,), math.nan, device=device)
    synced = first
    status, diverged_at = "ok", -1
    bar = tqdm(total=cfg.steps, initial=first, desc=f"{cfg.model}/{cfg.norm} lr={cfg.lr:g}", disable=not (
        show_progress() if progress is None else progress), leave=False)
    for step in range(first, cfg.steps):
        if ckpt_path is not None and step > first and step % checkpoint_every == 0:
            _save_checkpoint(ckpt_path, cfg, step, model, gens, log, elapsed_before + time.perf_counter() - start)
        if full_batch:
            x, y = xtr, ytr
        else:
            idx = next(order)
            x, y = xtr[idx], ytr[idx]
            if cfg.augment:
                x = bdata.augment(x, aug_gen)
        if cfg.probe_every and step % cfg.probe_every == 0:
            log["probe_steps"].append(step)
            log["probe_rows"].append(run_probes(cfg, model, loss_fn, x, y, step))
        with _recording_shift(model, cfg.act_layers, shift):
            out = model(x)
        loss = loss_fn(out, y)
        step_loss[step] = loss.detach()
        if not regression:
            step_acc[step] = (out.argmax(1) == y).float().mean()
        evaluate_now = cfg.eval_every and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps)
        checkpoint_next = ckpt_path is not None and (step + 1) % checkpoint_every == 0
        if (step + 1 - synced) >= sync_every or evaluate_now or checkpoint_next or step + 1 == cfg.steps:
            losses[synced : step + 1] = step_loss[synced : step + 1].cpu().numpy()
            accs[synced : step + 1] = step_acc[synced : step + 1].cpu().numpy()
            bad = np.flatnonzero(~np.isfinite(losses[synced : step + 1]))
            if bad.size:
                status, diverged_at = "diverged", synced + int(bad[0])
                losses[diverged_at:] = np.nan
                break
            synced = step + 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if evaluate_now:
            evals.append((step + 1, *evaluate(model, xte, yte, loss_fn)))
            bar.set_postfix(loss=f"{losses[step]:.3g}", test=f"{evals[-1][2]:.3f}")
        bar.update()
    bar.close()

    done = diverged_at if status == "diverged" else cfg.steps
    history: dict[str, np.ndarray] = {
        "step": np.arange(done),
        "train_loss": losses[:done],
        "train_acc": accs[:done],
        "eval_step": np.array([e[0] for e in evals], dtype=np.int64),
        "test_loss": np.array([e[1] for e in evals]),
        "test_acc": np.array([e[2] for e in evals]),
        "probe_step": np.array(log["probe_steps"], dtype=np.int64),
    }
    for key, rows in shift.items():
        history[key] = np.stack(rows[:done]) if done else np.zeros((0, 0), np.float32)
    for key in log["probe_rows"][0] if log["probe_rows"] else []:
        history[key] = np.stack([np.asarray(r[key]) for r in log["probe_rows"]])
    tail = slice(max(0, done - 100), done)
    final = {
        "status": status,
        "diverged_at": diverged_at,
        "steps_done": done,
        "train_loss": float(np.mean(losses[tail])) if done else math.nan,
        "train_acc": float(np.mean(accs[tail])) if done and not regression else math.nan,
        "test_loss": evals[-1][1] if evals and status == "ok" else math.nan,
        "test_acc": evals[-1][2] if evals and status == "ok" else math.nan,
        "wall_time": elapsed_before + time.perf_counter() - start,
    }
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return Run(cfg, history, final, state)


def config_from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config from its `dataclasses.asdict` form (tuples come back from JSON as lists)."""
    fields = {f.name for f in dataclasses.fields(Config)}
    unknown = set(d) - fields
    if unknown:
        raise ValueError(f"unknown Config fields {sorted(unknown)}; valid fields: {sorted(fields)}")
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
