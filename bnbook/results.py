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

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .train import Config, Run, config_from_dict, train

CACHE_ENV = "BNBOOK_CACHE"
PACKAGE_DIR = Path(__file__).resolve().parent
# The modules whose code determines a run's numbers; editing any of them invalidates the cache.
RUN_SOURCES = ("data.py", "models.py", "norms.py", "probes.py", "train.py")


def cache_dir() -> Path:
    """Where cached runs live: `$BNBOOK_CACHE`, else `data/cache` beside the package."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).resolve() if env else PACKAGE_DIR.parent / "data" / "cache"


def source_hash() -> str:
    """A hash of the source of every module that affects a run's numbers."""
    h = hashlib.sha256()
    for name in RUN_SOURCES:
        h.update(name.encode())
        h.update((PACKAGE_DIR / name).read_bytes())
    return h.hexdigest()[:16]


def run_key(cfg: Config) -> str:
    """The cache key of a run: its configuration and the code that computes it."""
    blob = json.dumps(dataclasses.asdict(cfg), sort_keys=True) + source_hash()
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
            ["git", "status", "--porcelain", "--", "bnbook"], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=5
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


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(file_object)` on a temporary file beside `path`, then move it into place atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def get_run(cfg: Config, retrain: bool = False, progress: bool | None = None) -> Run:
    """The run described by `cfg`: from the cache, or trained now and cached.

    `retrain=True` ignores the cache. A cache file that cannot be read (truncated, corrupted, from an
    incompatible version) is reported with a warning and recomputed.
    """
    path = run_path(cfg)
    if path.exists() and not retrain:
        try:
            return load_run(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            warnings.warn(f"discarding unreadable cached run {path} ({type(e).__name__}: {e}); recomputing it")
    run = train(cfg, progress=progress)
    run.provenance = provenance()
    save_run(run, path)
    return run

