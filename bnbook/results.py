"""Cached runs: every run is identified by its full `Config` plus the source of the code that computes it.

`get_run(config)` returns the cached `Run` when there is one and otherwise trains it and caches it, so
chapters share runs and re-executing a notebook is fast. A cache file is one `.npz` (histories, final
weights and a JSON record with the configuration, final numbers and provenance: package and torch
versions, git commit, hardware, wall time). Writes are atomic (temporary file + `os.replace`), so an
interrupted run never leaves a file that looks complete; an unreadable file is discarded and recomputed.
The cache folder is `$BNBOOK_CACHE`, or `data/cache/` in the repository (git-ignored; not the dataset
folder, which may be read-only).
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import functools
import hashlib
import json
import multiprocessing
import os
import platform
import subprocess
import warnings
import zipfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .data import atomic_write
from .train import Config, Run, config_from_dict, show_progress, train

CACHE_ENV = "BNBOOK_CACHE"
WORKERS_ENV = "BNBOOK_WORKERS"
PACKAGE_DIR = Path(__file__).resolve().parent
# The modules whose code determines a run's numbers. Their code, not their text, is the cache key: `code_fingerprint`
# drops what cannot change a number (comments, docstrings, error and warning messages, progress bars), so editing
# those keeps the cache, and any other edit retrains.
RUN_SOURCES = ("data.py", "models.py", "norms.py", "probes.py", "train.py")
# calls that only display: their arguments are dropped from the fingerprint
_DISPLAY_CALLS = frozenset({"tqdm", "set_postfix", "set_description", "print", "warn"})


class _Numbers(ast.NodeTransformer):
    """Strips a module's syntax tree down to what can change a number."""

    def _body(self, node):
        if node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            node.body = node.body[1:] or [ast.Pass()]  # the docstring
        return self.generic_visit(node)

    visit_Module = visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _body

    def visit_Raise(self, node: ast.Raise) -> ast.Raise:
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        return ast.Raise(exc=exc, cause=None)  # which error, not its message

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        return ast.Assert(test=self.visit(node.test), msg=None)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        if name in _DISPLAY_CALLS:
            return ast.Call(func=f, args=[], keywords=[])
        return self.generic_visit(node)


@functools.lru_cache(maxsize=64)  # run_key calls it for every run: parse each module's text once, not every time
def code_fingerprint(source: str) -> str:
    """A hash of the code in `source` (Python), blind to comments, docstrings, messages and progress display."""
    tree = _Numbers().visit(ast.parse(source))
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


def cache_dir() -> Path:
    """Where cached runs live: `$BNBOOK_CACHE`, else `data/cache` beside the package."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).resolve() if env else PACKAGE_DIR.parent / "data" / "cache"


def source_hash() -> str:
    """A hash of the code (`code_fingerprint`) of every module that affects a run's numbers."""
    h = hashlib.sha256()
    for name in RUN_SOURCES:
        h.update(name.encode())
        h.update(code_fingerprint((PACKAGE_DIR / name).read_text()).encode())
    return h.hexdigest()[:16]


def run_key(cfg: Config) -> str:
    """The cache key of a run: its configuration and the code that computes it."""
    blob = cfg.to_json() + source_hash()
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def run_path(cfg: Config) -> Path:
    """The cache file of a run (whether or not it exists yet)."""
    return cache_dir() / f"{cfg.model}-{cfg.norm}-lr{cfg.lr:g}-s{cfg.seed}-{run_key(cfg)}.npz"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance() -> dict[str, Any]:
    """Where and with what a run was computed."""
    return {
        "bnbook": __version__,
        "source_hash": source_hash(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "git_commit": _git_commit(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }


def save_run(run: Run, path: Path) -> None:
    """Write a run to `path` atomically."""
    meta = {
        "config": dataclasses.asdict(run.config),
        "final": run.final,
        "provenance": run.provenance,
        "state_dtypes": {k: str(v.dtype) for k, v in run.state.items()},
    }
    arrays = {f"h/{k}": np.asarray(v) for k, v in run.history.items()}
    arrays.update({f"s/{k}": v.detach().cpu().numpy() for k, v in run.state.items()})
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_run(path: Path) -> Run:
    """Read a run written by `save_run` (never unpickles: arrays only)."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        history = {k[2:]: z[k] for k in z.files if k.startswith("h/")}
        state = {k[2:]: torch.from_numpy(z[k].copy()) for k in z.files if k.startswith("s/")}
    return Run(config_from_dict(meta["config"]), history, meta["final"], state, meta["provenance"])


def _cached(path: Path) -> Run | None:
    """The run in `path`, or None if there is none; an unreadable file is reported and ignored."""
    if not path.exists():
        return None
    try:
        return load_run(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        warnings.warn(f"discarding unreadable cached run {path} ({type(e).__name__}: {e}); recomputing it")
        return None


# Runs longer than this (in `_cost` units, about seconds on one core of the book's machines) checkpoint every
# CHECKPOINT_EVERY steps beside their cache file and resume from it when interrupted (bit-identical): the
# extended-scale runs (`python -m bnbook grid extended`), not the book's.
CHECKPOINT_COST = 300
CHECKPOINT_EVERY = 250


def _train_and_save(cfg: Config, progress: bool | None = None) -> Run:
    path = run_path(cfg)
    ckpt = path.with_suffix(".ckpt") if _cost(cfg) > CHECKPOINT_COST else None
    run = train(cfg, progress=progress, checkpoint=ckpt, checkpoint_every=CHECKPOINT_EVERY)
    run.provenance = provenance()
    save_run(run, path)
    if ckpt is not None:
        ckpt.unlink(missing_ok=True)
    return run


def _train_in_worker(cfg: Config) -> None:
    _train_and_save(cfg, progress=False)


def workers() -> int:
    """How many runs train at once: `$BNBOOK_WORKERS`, else one per CPU core (each run uses one thread)."""
    env = os.environ.get(WORKERS_ENV)
    if env is not None:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"${WORKERS_ENV}={env!r} must be a whole number >= 1")
        return int(env)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _cost(cfg: Config) -> float:
    """A rough relative training time, to start the longest runs first."""
    per_step = {"vgg": 0.08 * cfg.width / 0.125, "mlp": 0.004, "dln": 0.012 if cfg.norm != "none" else 0.005}
    sharpness = 40 / cfg.sharpness_every if cfg.sharpness_every else 0.0  # measured: +40% at one per 100 VGG steps
    return cfg.steps * per_step[cfg.model] * ((1.3 if cfg.probe_every else 1.0) + sharpness)


def get_runs(configs: list[Config], retrain: bool = False, progress: bool | None = None) -> list[Run]:
    """The runs described by `configs`, in order: from the cache, or trained now and cached.

    Missing runs are trained in parallel, `workers()` at a time, each in its own process with one
    thread, longest first; the numbers are the same as training them one by one (the runs are
    deterministic and share nothing). `retrain=True` ignores the cache. A cache file that cannot be
    read (truncated, corrupted, from an incompatible version) is reported with a warning and recomputed.
    """
    found = {c: None if retrain else _cached(run_path(c)) for c in dict.fromkeys(configs)}
    missing = sorted((c for c, r in found.items() if r is None), key=_cost, reverse=True)
    n_workers = min(workers(), len(missing))
    if n_workers <= 1:
        for cfg in missing:
            found[cfg] = _train_and_save(cfg, progress)
    else:
        show = show_progress() if progress is None else progress
        # spawn, not fork: a forked PyTorch (or Jupyter kernel) process can deadlock in its thread pools
        with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            jobs = {pool.submit(_train_in_worker, cfg): cfg for cfg in missing}
            with tqdm(total=len(jobs), desc=f"training {len(jobs)} runs on {n_workers} cores", disable=not show) as bar:
                for job in as_completed(jobs):
                    job.result()  # a worker's exception (bad data, say) is raised here, with its message
                    found[jobs[job]] = load_run(run_path(jobs[job]))
                    bar.update()
    return [found[c] for c in configs]


def find_run(cfg: Config) -> Run | None:
    """The cached book-scale run of `cfg`, or None (never trains)."""
    return _cached(run_path(cfg))


def get_run(cfg: Config, retrain: bool = False, progress: bool | None = None) -> Run:
    """The run described by `cfg`: from the cache, or trained now (in this process) and cached."""
    return get_runs([cfg], retrain=retrain, progress=progress)[0]


# Paper-scale runs (`python -m bnbook paper`) take GPU-hours, so they are kept apart from the book's
# cache and keyed by their configuration alone: editing the package does not discard them; their
# provenance (commit, device, date) says what computed them.
PAPER_ENV = "BNBOOK_PAPER"


def paper_dir() -> Path:
    """Where paper-scale runs live: `$BNBOOK_PAPER`, else `data/paper` beside the package."""
    env = os.environ.get(PAPER_ENV)
    return Path(env).resolve() if env else PACKAGE_DIR.parent / "data" / "paper"


def paper_path(cfg: Config) -> Path:
    """The file of a paper-scale run of `cfg` (exactly this configuration)."""
    key = hashlib.sha256(cfg.to_json().encode()).hexdigest()[:20]
    return paper_dir() / f"{cfg.model}-{cfg.norm}-lr{cfg.lr:g}-s{cfg.seed}-{key}.npz"


def find_paper_run(cfg: Config) -> Run | None:
    """The paper-scale run of `cfg` if one has been computed here, else None (never trains)."""
    return _cached(paper_path(cfg))


def train_paper_run(cfg: Config, device: str, threads: int, checkpoint_every: int = 500,
                    progress: bool | None = None, tf32: bool = False) -> Run:
    """Train `cfg` (normally a paper-scale config), resuming from its checkpoint, and keep it in `paper_dir()`."""
    path = paper_path(cfg)
    done = _cached(path)
    if done is not None:
        return done
    ckpt = path.with_suffix(".ckpt")
    run = train(cfg, progress=progress, device=device, threads=threads, checkpoint=ckpt,
                checkpoint_every=checkpoint_every, tf32=tf32)
    run.provenance = provenance() | {"device": device, "threads": threads, "tf32": tf32,
                                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    save_run(run, path)
    ckpt.unlink(missing_ok=True)
    return run


@dataclasses.dataclass
class PaperJob:
    """One paper-scale run as a cluster job (submitit): trains into `paper_dir` (given explicitly, since a
    job may start in another working directory), resuming from the run's checkpoint. When the scheduler
    stops the job (time limit, preemption), submitit calls `checkpoint`, which resubmits the same job:
    it picks up at the last checkpoint."""

    config: Config
    paper_dir: str
    device: str | None = None  # None: decided on the node (a GPU if it has one)
    threads: int | None = None
    checkpoint_every: int = 500
    tf32: bool = False

    def __call__(self) -> str:
        os.environ[PAPER_ENV] = self.paper_dir
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        threads = self.threads or (os.cpu_count() or 1)
        train_paper_run(self.config, device, threads, self.checkpoint_every, progress=False, tf32=self.tf32)
        return str(paper_path(self.config))

    def checkpoint(self) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def get_ensemble(cfg: Config, progress: bool | None = None) -> list[Run]:
    """Every seed of `cfg`'s ensemble (`experiments.ensemble(cfg)`), in seed order: cached or trained now."""
    from .experiments import ensemble  # experiments reads results lazily; both at import would be a cycle

    return get_runs(ensemble(cfg), progress=progress)
