"""Data for the book: CIFAR-10 (official "python version" layout) and the deep-linear-network task.

CIFAR-10 lives in ``data_dir()/cifar-10-batches-py`` and is downloaded on first use. Everything that
can go wrong with it (no network, a corrupt archive, a truncated or tampered batch file) raises
``DataError`` with a message that names the file and says how to fix it, because the reader of an
executable textbook should never have to debug a traceback from inside ``pickle`` or ``tarfile``.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib
import os
import pickle
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DATA_ENV", "CIFAR10_URL", "CIFAR10_MD5", "DataError", "data_dir", "ensure_cifar10",
    "load_cifar10", "cifar10_classes", "batches", "augment", "linear_regression_data",
]

DATA_ENV = "BNBOOK_DATA"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# MD5 of the official archive. It says nothing about the extracted files: re-encoded copies (like
# the one on the book's build machines) differ byte-wise yet are perfectly valid.
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"

CIFAR_FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
REQUIRED_FILES = (*TRAIN_FILES, *TEST_FILES, META_FILE)
NUM_CLASSES = 10
# Images per batch file. A module constant (not a literal) so the tests can build tiny folders.
_BATCH_ROWS = 10_000
_PIXELS = 3 * 32 * 32

_DOWNLOAD_TIMEOUT = 60.0  # seconds per socket operation, not for the whole 163 MB transfer
_CHUNK = 1 << 20


class DataError(RuntimeError):
    """A data file or folder is missing, corrupt or unsafe; the message says which and how to fix it."""


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds ``cifar-10-batches-py/``.

    ``root`` if given, else ``$BNBOOK_DATA``, else ``data/`` beside the ``bnbook`` package (the repo
    root). A relative ``$BNBOOK_DATA`` is relative to the current working directory.
    """
    if root is None:
        root = os.environ.get(DATA_ENV) or Path(__file__).resolve().parent.parent / "data"
    return Path(root).expanduser().absolute()


# ---------------------------------------------------------------------------------------------
# Download and extraction

def _missing_files(folder: Path) -> list[str]:
    return [name for name in REQUIRED_FILES if not (folder / name).is_file()]


def _manual_fix(folder: Path) -> str:
    return (
        f"To fix it by hand: download {CIFAR10_URL} (MD5 {CIFAR10_MD5}) and extract it so that the "
        f"folder {folder} exists and holds {', '.join(REQUIRED_FILES)}; or set the environment "
        f"variable {DATA_ENV} to another folder that contains {CIFAR_FOLDER}/."
    )


def ensure_cifar10(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return the ``cifar-10-batches-py`` folder, downloading and extracting it if needed.

    A missing or incomplete folder is (re)built from the official archive when ``download`` is true:
    the archive is streamed to a temporary file in the data folder, checked against ``CIFAR10_MD5``,
    extracted into a temporary folder and renamed into place in one step, so an interrupted run never
    leaves a folder that looks complete. An incomplete folder is replaced. Raises ``DataError``.
    """
    root_dir = data_dir(root)
    folder = root_dir / CIFAR_FOLDER
    missing = _missing_files(folder)
    if not missing:
        return folder
    state = (f"{folder} is missing {', '.join(missing)}" if folder.is_dir()
             else f"{folder} does not exist")
    if not download:
        raise DataError(f"CIFAR-10 not found: {state}. {_manual_fix(folder)}")
    try:
        root_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"Cannot create the data folder {root_dir} ({e}). Make it writable, or "
                        f"{_manual_fix(folder)}") from e
    _download_and_extract(root_dir, folder, state)
    return folder


def _download_and_extract(root_dir: Path, folder: Path, state: str) -> None:
    archive: Path | None = None
    work: Path | None = None
    try:
        try:
            fd, name = tempfile.mkstemp(dir=root_dir, prefix=".cifar-10-python.", suffix=".tar.gz.part")
            archive = Path(name)
            with os.fdopen(fd, "wb") as f:
                md5 = _fetch(CIFAR10_URL, f, folder, state)
        except OSError as e:  # network errors were already turned into DataError by _fetch
            raise DataError(f"Cannot write the download to {root_dir} ({e}). Free some space or make "
                            f"the folder writable, or {_manual_fix(folder)}") from e
        if md5 != CIFAR10_MD5:
            raise DataError(
                f"The archive downloaded from {CIFAR10_URL} has MD5 {md5}, expected {CIFAR10_MD5}: it "
                f"is corrupt or not the official file, so it was deleted. Run again to retry. "
                f"{_manual_fix(folder)}")
        try:
            work = Path(tempfile.mkdtemp(dir=root_dir, prefix=".cifar-10-extract-"))
            _safe_extract(archive, work, folder)
            _install(work / CIFAR_FOLDER, folder, work)
        except OSError as e:
            raise DataError(f"Cannot extract {CIFAR10_URL} into {root_dir} ({e}). Free some space or "
                            f"make the folder writable, or {_manual_fix(folder)}") from e
    finally:
        # Also runs on KeyboardInterrupt: nothing half-written survives.
        if archive is not None:
            archive.unlink(missing_ok=True)
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)


def _fetch(url: str, out: Any, folder: Path, state: str) -> str:
    """Stream ``url`` into the open binary file ``out``; return the MD5 hex digest."""
    def network_error(e: BaseException) -> DataError:
        return DataError(
            f"Could not download CIFAR-10 from {url} ({type(e).__name__}: {e}); {state}. This machine "
            f"may have no internet access. {_manual_fix(folder)}")

    md5 = hashlib.md5()
    try:
        response = urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT)
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
        raise network_error(e) from e
    with response:
        total = response.headers.get("Content-Length") if response.headers else None
        bar = None
        # A progress bar only for a human watching: it would spam CI logs and notebook outputs.
        if sys.stderr.isatty() and not os.environ.get("CI"):
            try:
                from tqdm import tqdm
                bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                           desc="CIFAR-10")
            except ImportError:
                pass
        try:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise network_error(e) from e
                if not chunk:
                    break
                out.write(chunk)
                md5.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    return md5.hexdigest()


def _safe_extract(archive: Path, dest: Path, folder: Path) -> None:
    """Extract only regular files and folders under ``cifar-10-batches-py/`` into ``dest``.

    Every member is checked before anything is written, so a hostile archive writes nothing. The
    MD5 check already pins the official archive; this is defence in depth for when it is changed.
    """
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                problem = _member_problem(m)
                if problem:
                    raise DataError(
                        f"Refusing to extract the archive from {CIFAR10_URL}: member {m.name!r} "
                        f"{problem}. It is not the official CIFAR-10 archive; nothing was extracted. "
                        f"{_manual_fix(folder)}")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Python < 3.10.12 has no filters; the member check above already covers it
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError) as e:
        raise DataError(f"The archive downloaded from {CIFAR10_URL} cannot be read ({e}); it was "
                        f"deleted. Run again to retry. {_manual_fix(folder)}") from e
    missing = _missing_files(dest / CIFAR_FOLDER)
    if missing:
        raise DataError(f"The archive from {CIFAR10_URL} lacks {CIFAR_FOLDER}/{', '.join(missing)}; "
                        f"nothing was installed. {_manual_fix(folder)}")


def _member_problem(m: tarfile.TarInfo) -> str | None:
    name = m.name.replace("\\", "/")
    path = PurePosixPath(name)
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    if ".." in path.parts:
        return "escapes the folder with '..'"
    if not (m.isreg() or m.isdir()):
        return "is a link or device, not a regular file or folder"
    parts = [p for p in path.parts if p != "."]
    if not parts or parts[0] != CIFAR_FOLDER:
        return f"is not under {CIFAR_FOLDER}/"
    return None


def _install(new: Path, folder: Path, trash: Path) -> None:
    """Move the extracted ``new`` folder to ``folder`` with a single rename."""
    if folder.exists():
        if folder.is_dir() and not _missing_files(folder):
            return  # another process finished first
        # An incomplete leftover (e.g. a partial manual copy): move it into the temp folder, which
        # the caller deletes, so the rename below can take its place.
        os.rename(folder, trash / "incomplete-old")
    try:
        os.rename(new, folder)
    except OSError:
        if folder.is_dir() and not _missing_files(folder):
            return  # lost a race against a concurrent download; its copy is as good as ours
        raise


# ---------------------------------------------------------------------------------------------
# Reading batch files

def _numpy_global(submodule: str, name: str) -> Any:
    # numpy 2 renamed numpy.core to numpy._core (the old name still imports, with a warning).
    for prefix in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{prefix}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {submodule}.{name}")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_global("multiarray", "_reconstruct")
    frombuffer = _numpy_global("numeric", "_frombuffer")
    import codecs
    return {
        # The official files (Python 2 numpy) and numpy-1 re-pickles spell it numpy.core...
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # ...pickle protocol 5 writes contiguous arrays through _frombuffer...
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        # ...and Python 3 at protocol <= 2 stores bytes as _codecs.encode(str, "latin1").
        ("_codecs", "encode"): codecs.encode,
    }


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays, dicts, lists and strings, and nothing else.

    Plain ``pickle.load`` runs any callable named in the file; a batch file from an untrusted mirror
    could therefore run arbitrary code. This one refuses every global outside the numpy-array set.
    """

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.path = path
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"refusing to unpickle {module}.{name}: {self.path} is not a CIFAR-10 batch (a batch "
                f"holds only numpy arrays, lists and strings). Do not use this file: delete "
                f"{self.path.parent} and run again to re-download, or {_manual_fix(self.path.parent)}"
            ) from None


def _corrupt_fix(path: Path) -> str:
    return (f"Fix: delete the folder {path.parent} and run again to re-download it, or replace it "
            f"with an intact copy, or set {DATA_ENV} to a folder holding a good {CIFAR_FOLDER}/.")


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, path).load()
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{path} is missing. {_corrupt_fix(path)}") from e
    except OSError as e:
        raise DataError(f"Cannot read {path} ({e}). {_corrupt_fix(path)}") from e
    except Exception as e:
        # A damaged pickle can fail in almost any way (EOFError, UnpicklingError, ValueError from
        # numpy, TypeError, ...); all of them mean the same thing to the reader.
        raise DataError(f"{path} is truncated or corrupt and cannot be unpickled "
                        f"({type(e).__name__}: {e}). {_corrupt_fix(path)}") from e


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Load and validate one batch file; return (uint8 N x 3072 pixels, int64 N labels)."""
    d = _unpickle(path)
    if not isinstance(d, dict):
        raise DataError(f"{path} holds a {type(d).__name__}, expected a dict with keys 'data' and "
                        f"'labels'. {_corrupt_fix(path)}")
    missing = [k for k in ("data", "labels") if k not in d]
    if missing:
        raise DataError(f"{path} lacks the key(s) {missing}; found {sorted(map(str, d))}. "
                        f"{_corrupt_fix(path)}")
    data, expected = d["data"], (_BATCH_ROWS, _PIXELS)
    if not isinstance(data, np.ndarray):
        raise DataError(f"{path}: 'data' is a {type(data).__name__}, expected a numpy uint8 array of "
                        f"shape {expected}. {_corrupt_fix(path)}")
    if data.dtype != np.uint8:
        raise DataError(f"{path}: 'data' has dtype {data.dtype}, expected uint8. {_corrupt_fix(path)}")
    if data.shape != expected:
        raise DataError(f"{path}: 'data' has shape {data.shape}, expected {expected} (images x "
                        f"channel-planar 3x32x32 pixels). {_corrupt_fix(path)}")
    try:
        labels = np.asarray(d["labels"])
    except Exception as e:
        raise DataError(f"{path}: 'labels' is not a list of ints ({e}). {_corrupt_fix(path)}") from e
    if labels.shape != (_BATCH_ROWS,) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: 'labels' has shape {labels.shape} and dtype {labels.dtype}, expected "
                        f"{_BATCH_ROWS} ints. {_corrupt_fix(path)}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{path}: labels range over {labels.min()}..{labels.max()}, expected "
                        f"0..{NUM_CLASSES - 1}. {_corrupt_fix(path)}")
    return data, labels.astype(np.int64)


def _check_class_counts(labels: np.ndarray, names: tuple[str, ...], folder: Path) -> None:
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    per_class = len(names) * _BATCH_ROWS // NUM_CLASSES
    if not (counts == per_class).all():
        files = ", ".join(str(folder / n) for n in names)
        raise DataError(f"{files}: class counts are {counts.tolist()}, expected {per_class} images "
                        f"of each of the {NUM_CLASSES} classes. {_corrupt_fix(folder / names[0])}")


def _read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = TRAIN_FILES if split == "train" else TEST_FILES
    parts = [_read_batch(folder / name) for name in names]
    if len(parts) == 1:
        pixels, labels = parts[0]
    else:
        pixels = np.concatenate([p for p, _ in parts])
        labels = np.concatenate([lab for _, lab in parts])
    _check_class_counts(labels, names, folder)
    return pixels, labels


def _channel_stats(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of uint8 N x 3072 pixels, on the 0..255 scale.

    Sums of x and x^2 are accumulated exactly in int64 over row chunks (x^2 via a 256-entry lookup
    table), so the result is exact to float64 rounding without ever materialising a float64 copy
    of the 150 MB training set.
    """
    planes = pixels.reshape(len(pixels), 3, 1024)
    squares = (np.arange(256, dtype=np.uint32) ** 2)
    s1, s2 = [0, 0, 0], [0, 0, 0]
    for c in range(3):
        for start in range(0, len(pixels), 4096):
            chunk = planes[start:start + 4096, c]
            s1[c] += int(chunk.sum(dtype=np.int64))
            s2[c] += int(squares[chunk].sum(dtype=np.int64))
    count = len(pixels) * 1024
    mean = np.array([a / count for a in s1], dtype=np.float64)
    # Python-int numerator: no cancellation in S2/N - mean^2.
    var = np.array([(b * count - a * a) / count**2 for a, b in zip(s1, s2)], dtype=np.float64)
    return mean, np.sqrt(var)


_SPLITS = ("train", "test")
# (resolved folder, split, standardize) -> (images, labels); and resolved folder -> train mean/std.
_CACHE: dict[tuple[str, str, bool], tuple[Tensor, Tensor]] = {}
_STATS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def load_cifar10(split: str = "train", root: str | os.PathLike | None = None,
                 standardize: bool = True) -> tuple[Tensor, Tensor]:
    """CIFAR-10 as (images float32 N x 3 x 32 x 32, labels int64 N), downloading it if needed.

    ``standardize`` subtracts the per-channel mean and divides by the per-channel std of the *train*
    split (for both splits, so the test set sees exactly the transform the model was trained with);
    otherwise pixels are scaled to [0, 1]. Results are cached per process, so a second call is free;
    the cached tensors are returned as they are, so callers must not modify them in place (use
    ``x.clone()`` first).
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    folder = data_dir(root) / CIFAR_FOLDER
    key = (str(folder.resolve()), split, bool(standardize))
    if key in _CACHE:
        return _CACHE[key]
    folder = ensure_cifar10(root)
    pixels, labels = _read_split(folder, split)
    n = len(pixels)
    u8 = torch.from_numpy(pixels).view(n, 3, 32, 32)
    if standardize:
        if split == "train" and key[0] not in _STATS:
            _STATS[key[0]] = _channel_stats(pixels)
        elif key[0] not in _STATS:
            _STATS[key[0]] = _channel_stats(_read_split(folder, "train")[0])
        mean, std = (torch.from_numpy(s).to(torch.float32).view(1, 3, 1, 1) for s in _STATS[key[0]])
        # Cast first: uint8 - float32 with broadcasting takes a slow mixed-dtype path (4x slower).
        images = u8.to(torch.float32).sub_(mean).div_(std)
    else:
        images = u8.to(torch.float32).div_(255.0)
    result = (images, torch.from_numpy(labels))
    _CACHE[key] = result
    return result


def cifar10_classes(root: str | os.PathLike | None = None) -> list[str]:
    """The 10 class names from ``batches.meta``, in label order (0 = airplane ... 9 = truck)."""
    path = ensure_cifar10(root) / META_FILE
    meta = _unpickle(path)
    names = meta.get("label_names") if isinstance(meta, dict) else None
    if (not isinstance(names, list) or len(names) != NUM_CLASSES
            or not all(isinstance(s, str) for s in names)):
        raise DataError(f"{path}: expected a dict whose 'label_names' is a list of {NUM_CLASSES} "
                        f"strings, found {names!r}. {_corrupt_fix(path)}")
    return list(names)


# ---------------------------------------------------------------------------------------------
# Batching and augmentation

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


def batches(n: int, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Endless int64 index batches over ``range(n)``: a fresh permutation each epoch.

    Draws only from a ``torch.Generator`` seeded with ``seed``, so the order is reproducible and
    independent of whatever else touches the global RNG. The last incomplete batch of each epoch is
    dropped, so every batch has exactly ``batch_size`` indices (BN statistics of a tiny last batch
    would be noise).
    """
    if batch_size < 1 or n < 1:
        raise ValueError(f"n and batch_size must be positive, got n={n}, batch_size={batch_size}")
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the data set (n={n})")
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=g)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start:start + batch_size]


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random 32x32 crop from the image zero-padded by 4 pixels, then a random horizontal flip.

    ``x`` is a batch N x C x H x W; each image gets its own offset and flip, drawn only from
    ``generator`` (offsets first, then flips). The padding value is 0, which for standardized inputs
    is the per-channel mean colour. Done with one gather instead of a Python loop over images.
    """
    if x.dim() != 4:
        raise ValueError(f"augment expects a batch N x C x H x W, got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    pad = 4
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=generator.device)
    flips = torch.randint(0, 2, (n,), generator=generator, device=generator.device).bool()
    offsets, flips = offsets.to(x.device), flips.to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # n x h
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flips[:, None], cols.flip(1), cols) + offsets[1, :, None]  # n x w
    b = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices separated by the channel slice go first: result is n x h x w x C.
    return padded[b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------------------------------
# Synthetic task

def linear_regression_data(n: int, dim: int = 10, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """The deep-linear-network regression task of Santurkar et al. (2018): ``Y = X @ A.T``.

    ``X`` (n x dim) and ``A`` (dim x dim) have i.i.d. N(0, 1) entries, all float32, drawn from a
    ``torch.Generator`` seeded with ``seed``. ``A`` is drawn first, so the same seed gives the same
    target map for every ``n``. Returns ``(X, Y, A)``.
    """
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(dim, dim, generator=g)
    X = torch.randn(n, dim, generator=g)
    return X, X @ A.T, A
