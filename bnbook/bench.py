"""Benchmarks: they print measurements and ratios against anchors measured in the same run; they are not
tests and never fail (timed tests would fail on a slower or busier machine; a ratio to an anchor does not).

- `main` (`python -m bnbook bench`): bnbook's book-scale steps against what a user would write instead:
  VGG (standard and BN) against a plain PyTorch loop over the same architecture built from `torch.nn`
  (`nn.BatchNorm2d`, `channels_last`), and the deep linear network against the same math as plain tensor
  ops; then the probes' overhead at the chapters' density, and achieved GFLOP/s. Targets: ≥ 1.0× both
  anchors, probes ≤ +30%.
- `ensemble` (`python -m bnbook bench --ensemble`): several seeds of one configuration, trained by the
  one-process-per-core pool against all seeds batched into one model (grouped convolutions; batched
  matrix products for the DLN).
- `book` (`python -m bnbook bench --book`): executes every chapter from an empty run cache, as CI does,
  and prints each chapter's wall time (target: the whole book ≤ 20 minutes), then times the HTML build
  from the committed outputs (target ≤ 2 minutes).

The machines are shared and noisy: every comparison is run as interleaved pairs (A B, B A, A B, …) and the
ratio reported is the median over pairs, with the range, so that a slow stretch hits both sides.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from . import data as bdata
from .experiments import BOOK_DLN, BOOK_VGG
from .models import VGG_CONFIGS
from .train import Config, build_model, train

BARE = dict(eval_every=0, probe_every=0, act_layers=(), ics_layers=(), landscape=(), random_direction=False,
            sharpness_every=0)


def _vgg_stack(cfg: Config, block: Callable[[int, int], list[nn.Module]]) -> tuple[list[nn.Module], int]:
    """`cfg`'s VGG convolution stack, each layer made by `block(c_in, c_out)`; (layers, channels at the end)."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in VGG_CONFIGS[cfg.arch]:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        c = max(1, round(v * cfg.width))
        layers += block(c_in, c)
        c_in = c
    return layers, c_in


def plain_vgg(cfg: Config) -> nn.Module:
    """`cfg`'s VGG as a user would write it with `torch.nn` (`nn.BatchNorm2d` when `cfg.norm == "batch"`),
    in the channels_last memory format."""
    bn = cfg.norm == "batch"
    layers, c_in = _vgg_stack(cfg, lambda ci, c: [nn.Conv2d(ci, c, 3, padding=1, bias=not bn),
                                                  *([nn.BatchNorm2d(c)] if bn else []), nn.ReLU(inplace=True)])
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c_in, 10))
    return model.to(memory_format=torch.channels_last).train()


def plain_vgg_loop(cfg: Config) -> float:
    """Seconds for `cfg.steps` SGD steps of `plain_vgg(cfg)` on the same batches as `train(cfg)`."""
    start = time.perf_counter()
    x_all, y_all = bdata.load_cifar10("train")
    model = plain_vgg(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    order = bdata.batches(cfg.train_size, cfg.batch_size, cfg.seed)
    for _ in range(cfg.steps):
        idx = next(order)
        x = x_all[idx].contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def plain_dln_loop(cfg: Config) -> float:
    """Seconds for `cfg.steps` full-batch gradient steps of `cfg`'s deep linear network written as plain
    tensor ops: W_i as tensors, BN as `var_mean` and arithmetic (with the same running averages as
    bnbook's layer keeps), autograd for the gradient, one fused SGD update."""
    start = time.perf_counter()
    x, y, _ = bdata.linear_regression_data(cfg.train_size, cfg.hidden, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    h, depth, bn = cfg.hidden, cfg.depth, cfg.norm == "batch"
    ws = [nn.init.xavier_uniform_(torch.empty(h, h), generator=gen).requires_grad_() for _ in range(depth)]
    gammas = [torch.ones(h, requires_grad=True) for _ in range(depth - 1)] if bn else []
    betas = [torch.zeros(h, requires_grad=True) for _ in range(depth - 1)] if bn else []
    running = [(torch.zeros(h), torch.ones(h)) for _ in range(depth - 1)]
    params = ws + gammas + betas
    m = len(x)
    for _ in range(cfg.steps):
        a = x
        for i, w in enumerate(ws):
            a = a @ w.T
            if bn and i < depth - 1:
                var, mean = torch.var_mean(a, 0, correction=0)
                with torch.no_grad():
                    running[i][0].lerp_(mean, 0.1)
                    running[i][1].lerp_(var * (m / (m - 1)), 0.1)
                a = (a - mean) * torch.rsqrt(var + 1e-5) * gammas[i] + betas[i]
        loss = (a - y).pow(2).sum()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            torch._foreach_add_(params, grads, alpha=-cfg.lr)
    return time.perf_counter() - start


def ours(cfg: Config) -> float:
    """Seconds for `train(cfg)` (setup included, as in the anchors)."""
    start = time.perf_counter()
    train(cfg, progress=False)
    return time.perf_counter() - start


def paired(a: Callable[[], float], b: Callable[[], float], rounds: int) -> tuple[float, float, float]:
    """Interleaved timings of a and b: (median of the ratios time_a / time_b over rounds, min, max)."""
    a(), b()  # warm-up: allocator, thread pool, caches
    ratios = []
    for r in range(rounds):
        ta, tb = (a(), b()) if r % 2 == 0 else tuple(reversed((b(), a())))
        ratios.append(ta / tb)
    return statistics.median(ratios), min(ratios), max(ratios)


def step_flops(cfg: Config) -> int:
    """Floating-point operations of one training step (forward and backward) of `cfg`'s model."""
    model = build_model(cfg).train()
    x = torch.zeros(cfg.batch_size, 3, 32, 32)
    y = torch.zeros(cfg.batch_size, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


def _line(name: str, ratio: tuple[float, float, float], target: str) -> str:
    med, lo, hi = ratio
    return f"  {name:58s} {med:6.3f}x  (range {lo:.3f}-{hi:.3f})  target {target}"


def main(steps: int = 40, width: float = BOOK_VGG.width, rounds: int = 5, dln_steps: int = 400) -> int:
    """Print bnbook's book-scale steps against the anchors, the probe overhead and GFLOP/s."""
    torch.set_num_threads(1)  # as the book trains: one thread per run
    bdata.load_cifar10("train")
    vgg = {n: dataclasses.replace(BOOK_VGG, norm=n, width=width, steps=steps, **BARE) for n in ("none", "batch")}
    dln = dataclasses.replace(BOOK_DLN, norm="batch", steps=dln_steps, **BARE)
    print(f"benchmark: book scale, 1 thread, torch {torch.__version__}, {rounds} interleaved rounds; "
          f"ratio = anchor time / bnbook time (> 1: bnbook is faster)")
    print(f"  VGG-11 x{width:g}, batch {BOOK_VGG.batch_size}, {steps} steps; DLN {dln.depth}x{dln.hidden}, "
          f"{dln.train_size} samples, {dln_steps} steps")
    for n, label in (("none", "standard"), ("batch", "BN")):
        r = paired(lambda: plain_vgg_loop(vgg[n]), lambda: ours(vgg[n]), rounds)
        anchor = "torch.nn" + (" + nn.BatchNorm2d" if n == "batch" else "") + ", channels_last"
        print(_line(f"VGG {label}: bnbook vs plain loop ({anchor})", r, ">= 1.0"), flush=True)
    r = paired(lambda: plain_dln_loop(dln), lambda: ours(dln), rounds)
    print(_line("DLN BN: bnbook vs the same math as plain tensor ops", r, ">= 1.0"), flush=True)

    # the probes at the density the chapters use, as a fraction of the bare run's time
    for name, base, probed in (
        ("VGG BN", vgg["batch"], dataclasses.replace(BOOK_VGG, width=width, norm="batch", steps=2 * BOOK_VGG.probe_every,
                                                      eval_every=0, sharpness_every=0)),
        ("DLN BN", dln,
         dataclasses.replace(BOOK_DLN, norm="batch", steps=4 * BOOK_DLN.probe_every, eval_every=0, sharpness_every=0)),
    ):
        base = dataclasses.replace(base, steps=probed.steps)
        med, lo, hi = paired(lambda: ours(probed), lambda: ours(base), rounds)
        what = f"every {probed.probe_every} steps: activations {probed.act_layers}, ICS {probed.ics_layers}, " \
               f"landscape x{len(probed.landscape)}" + (" + random" if probed.random_direction else "")
        print(f"  {name} probes ({what}): overhead {med - 1:+.1%} (range {lo - 1:+.1%} to {hi - 1:+.1%})  "
              f"target <= +30%", flush=True)
    # the Hessian's top eigenvalue (chapter 4.8) is extra work on purpose, with no target: reported, at its density
    sharp = dataclasses.replace(BOOK_VGG, width=width, norm="batch", steps=BOOK_VGG.sharpness_every, eval_every=0)
    without = dataclasses.replace(sharp, sharpness_every=0)
    med, lo, hi = paired(lambda: ours(sharp), lambda: ours(without), rounds)
    print(f"  VGG BN sharpness probe (every {sharp.sharpness_every} steps, on top of the probes above): overhead "
          f"{med - 1:+.1%} (range {lo - 1:+.1%} to {hi - 1:+.1%})", flush=True)
    t = min(ours(vgg["batch"]) for _ in range(2))
    flops = step_flops(vgg["batch"])
    print(f"  achieved, VGG BN: {flops * steps / t / 1e9:.2f} GFLOP/s ({flops / 1e9:.3f} GFLOP per step)")
    return 0


def book(root: Path | None = None) -> int:
    """Execute every chapter of the book in order on an empty cache, then build the HTML; print times."""
    import yaml  # installed with jupyter-book

    root = root or Path(__file__).resolve().parent.parent
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = [toc["root"]] + [c["file"] for c in toc.get("chapters", [])]
    notebooks = [root / f"{p}.ipynb" for p in pages if (root / f"{p}.ipynb").exists()]
    bin_dir = Path(sys.executable).parent
    rows, total = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        # an empty cache, and claim records kept out of the repository's committed ones
        env = dict(os.environ, BNBOOK_CACHE=str(Path(tmp) / "cache"), BNBOOK_CLAIMS=str(Path(tmp) / "claims"))
        for nb in notebooks:
            start = time.perf_counter()
            copy = Path(tmp) / nb.name
            shutil.copy(nb, copy)
            subprocess.run([str(bin_dir / "jupyter"), "execute", "--inplace", "--timeout=-1", str(copy)],
                           check=True, env=env, capture_output=True, cwd=nb.parent)
            seconds = time.perf_counter() - start
            total += seconds
            rows.append((nb.relative_to(root), seconds))
            print(f"  {str(nb.relative_to(root)):34s} {seconds:7.1f} s", flush=True)
        print(f"  {'whole book (empty cache)':34s} {total:7.1f} s = {total / 60:.1f} min  (target <= 20 min)")
        out = Path(tmp) / "book"
        shutil.copytree(root, out, ignore=shutil.ignore_patterns(".venv", "_build", "data", ".git"))
        start = time.perf_counter()
        subprocess.run([str(bin_dir / "jupyter-book"), "build", str(out)], check=True, capture_output=True)
        print(f"  {'HTML build (committed outputs)':34s} {time.perf_counter() - start:7.1f} s  (target <= 120 s)")
    return 0


def _worker_seconds(cfg: Config) -> float:
    torch.set_num_threads(1)
    return ours(cfg)


def pooled(configs: list[Config], workers: int) -> float:
    """Seconds of training `configs` at once, one process (one thread) each, as `results.get_runs` does,
    timed inside the workers: process start-up is left out, which favours the pool."""
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_worker_seconds, configs[:workers]))  # start the workers, load the data
        start = time.perf_counter()
        list(pool.map(_worker_seconds, configs))
        return time.perf_counter() - start


class BatchedVGG(nn.Module):
    """`seeds` copies of a BN VGG as one network: every convolution is grouped (group s = seed s), so
    one call computes every seed's forward pass; BN from scratch over seeds × channels is exactly each
    seed's own per-channel BN. The input stacks each seed's own batch along the channel axis."""

    def __init__(self, cfg: Config, seeds: int) -> None:
        super().__init__()
        from .norms import BatchNorm

        layers, c_in = _vgg_stack(cfg, lambda ci, c: [
            nn.Conv2d(seeds * ci, seeds * c, 3, padding=1, groups=seeds, bias=False), BatchNorm(seeds * c), nn.ReLU()])
        layers.append(nn.Conv2d(seeds * c_in, seeds * 10, 1, groups=seeds))  # the seeds' linear heads
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.seeds = seeds

    def forward(self, x: Tensor) -> Tensor:  # x: (N, seeds·3, 32, 32) → logits (seeds, N, 10)
        out = self.net(x.contiguous(memory_format=torch.channels_last))
        return out.reshape(len(x), self.seeds, 10).transpose(0, 1)


def batched_vgg_loop(cfg: Config, seeds: int) -> float:
    """Seconds for `cfg.steps` SGD steps of `seeds` seeds of `cfg` batched into one `BatchedVGG`."""
    start = time.perf_counter()
    x_all, y_all = bdata.load_cifar10("train")
    model = BatchedVGG(cfg, seeds).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, foreach=True)
    orders = [bdata.batches(cfg.train_size, cfg.batch_size, s) for s in range(seeds)]
    for _ in range(cfg.steps):
        idx = torch.stack([next(o) for o in orders])  # (seeds, N)
        x = x_all[idx].permute(1, 0, 2, 3, 4).reshape(cfg.batch_size, seeds * 3, 32, 32)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, 10), y_all[idx].reshape(-1), reduction="sum") / cfg.batch_size
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def batched_dln_loop(cfg: Config, seeds: int) -> float:
    """Seconds for `cfg.steps` gradient steps of `seeds` seeds of `cfg`'s DLN as one batched network:
    W as (seeds, h, h) for `torch.bmm`, BN from scratch over seeds × units."""
    from .norms import BatchNorm

    start = time.perf_counter()
    data = [bdata.linear_regression_data(cfg.train_size, cfg.hidden, seed=s)[:2] for s in range(seeds)]
    x, y = torch.stack([d[0] for d in data]), torch.stack([d[1] for d in data])  # (seeds, m, h)
    h, m = cfg.hidden, cfg.train_size
    gen = torch.Generator().manual_seed(0)
    ws = [nn.Parameter(nn.init.xavier_uniform_(torch.empty(seeds, h, h), generator=gen)) for _ in range(cfg.depth)]
    norms = [BatchNorm(seeds * h) for _ in range(cfg.depth - 1)] if cfg.norm == "batch" else []
    params = ws + [p for n in norms for p in n.parameters()]
    opt = torch.optim.SGD(params, lr=cfg.lr, foreach=True)
    for _ in range(cfg.steps):
        a = x
        for i, w in enumerate(ws):
            a = torch.bmm(a, w.transpose(1, 2))
            if norms and i < cfg.depth - 1:  # (seeds, m, h) → (m, seeds·h) columns → back
                a = norms[i](a.transpose(0, 1).reshape(m, seeds * h)).reshape(m, seeds, h).transpose(0, 1)
        loss = (a - y).pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def ensemble(seeds: int = 2, steps: int = 30, dln_steps: int = 300) -> int:
    """Print the time of `seeds` seeds trained by the process pool against the same seeds batched into
    one model (with as many threads as the pool has processes)."""
    from .results import workers

    cores = workers()
    bdata.load_cifar10("train")
    print(f"ensemble benchmark: {seeds} seeds, {cores} cores; pool = one process and one thread per run, "
          f"batched = one model of all seeds, {cores} threads; ratio = pool time / batched time (> 1: batched wins)")
    for name, cfg, batched in (
        ("VGG BN", dataclasses.replace(BOOK_VGG, norm="batch", steps=steps, **BARE), batched_vgg_loop),
        ("DLN BN", dataclasses.replace(BOOK_DLN, norm="batch", steps=dln_steps, **BARE), batched_dln_loop),
    ):
        configs = [dataclasses.replace(cfg, seed=s) for s in range(seeds)]
        t_pool = pooled(configs, min(cores, seeds))
        torch.set_num_threads(cores)
        batched(dataclasses.replace(cfg, steps=3), seeds)  # warm-up
        t_batched = min(batched(cfg, seeds) for _ in range(2))
        torch.set_num_threads(1)
        print(f"  {name}, {cfg.steps} steps: pool {t_pool:6.2f} s, batched {t_batched:6.2f} s, "
              f"ratio {t_pool / t_batched:.3f}", flush=True)
    return 0
