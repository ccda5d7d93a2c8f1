"""Benchmarks: they print measurements and ratios against targets; they are not tests and never fail.

- `main` (`python -m bnbook bench`): bnbook's training loop against a plain hand-written PyTorch loop
  (target ≥ 0.95×), the probes' overhead at the default interval (target ≤ 30%), achieved GFLOP/s.
- `book` (`python -m bnbook bench --book`): executes every chapter from an empty run cache, as CI does,
  and prints each chapter's wall time (target: the whole book ≤ 20 minutes), then times the HTML build
  from the committed outputs (target ≤ 2 minutes).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from . import data as bdata
from .experiments import BOOK_VGG
from .train import Config, build_model, train


def plain_loop(cfg: Config) -> float:
    """The same model, data, batches and SGD as `train`, written as the shortest PyTorch loop; seconds."""
    start = time.perf_counter()
    x_all, y_all = bdata.load_cifar10("train")
    model = build_model(cfg).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    order = bdata.batches(cfg.train_size, cfg.batch_size, cfg.seed)
    for _ in range(cfg.steps):
        idx = next(order)
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def step_flops(cfg: Config) -> int:
    """Floating-point operations of one training step (forward and backward) of `cfg`'s model."""
    model = build_model(cfg).train()
    x = torch.zeros(cfg.batch_size, 3, 32, 32)
    y = torch.zeros(cfg.batch_size, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


def main(steps: int = 60, width: float = 0.5) -> int:
    """Print the benchmark for a VGG-11 of `width` trained for `steps` steps at batch 128."""
    # the bare loop (no probes, no per-step statistics), then the book's probes at their interval
    base = dataclasses.replace(BOOK_VGG, width=width, steps=steps, eval_every=0, norm="batch", probe_every=0,
                               act_layers=(), ics_layers=(), landscape=(), random_direction=False)
    probed = dataclasses.replace(base, probe_every=BOOK_VGG.probe_every, act_layers=BOOK_VGG.act_layers,
                                 ics_layers=BOOK_VGG.ics_layers, landscape=BOOK_VGG.landscape,
                                 random_direction=BOOK_VGG.random_direction)
    bdata.load_cifar10("train")
    train(dataclasses.replace(base, steps=5))  # warm-up: allocator, thread pool
    plain_loop(dataclasses.replace(base, steps=5))
    t_plain = min(plain_loop(base) for _ in range(2))
    t_ours = min(train(base, progress=False).final["wall_time"] for _ in range(2))
    t_probed = train(probed, progress=False).final["wall_time"]
    images = steps * base.batch_size
    flops = step_flops(base) * steps
    print(f"benchmark: VGG-11 ×{width:g} width + BN, batch {base.batch_size}, {steps} steps, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"  plain PyTorch loop : {images / t_plain:8.1f} images/s")
    print(f"  bnbook train()     : {images / t_ours:8.1f} images/s  ratio {t_plain / t_ours:.3f}  (target >= 0.95)")
    print(f"  with the book's probes every {probed.probe_every} steps (activations, ICS, landscape x4 + random): "
          f"overhead {t_probed / t_ours - 1:+.1%}  (target <= +30%)")
    print(f"  achieved           : {flops / t_ours / 1e9:8.2f} GFLOP/s ({step_flops(base) / 1e9:.3f} GFLOP per step)")
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
