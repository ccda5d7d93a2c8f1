"""CI helper: copy the deep linear network's and the MLP's cached runs into the second configuration's cache, if
and only if that configuration computes them bit for bit as the first one did (each model on its own).

    python .ci/same_bits.py FIRST_CACHE SECOND_CACHE   (run with the second configuration's environment)

The deep linear network multiplies 10 x 10 matrices: ATen and oneDNN take the same code path for them under
either second configuration (.ci/second_configuration), so its runs come out bit-identical (measured: every DLN run of the
book). Retraining them would cost CI a quarter of an hour for no new information. The MLP is checked too: on
the development machine its runs end at the same accuracies under both, but not in the same bits, so the
chapters retrain it there. This script proves the premise on this machine instead of assuming it: it trains a short run of
each model and normalization, with every probe the book uses, in this process (the second configuration) and
compares it bit for bit with the same run trained in a subprocess under the first configuration (the
environment without the variables below). Only a model whose short runs all agree has its cached runs copied;
the chapters retrain the others.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

SECOND_CONFIGURATION = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
NORMS = {"dln": ("none", "batch", "l1", "l2", "linf"), "mlp": ("none", "batch")}  # the models it checks


def short_runs() -> dict[str, dict[str, list]]:
    """Histories and final weights of 300-step runs of the DLN and the MLP with each normalization, as hex strings."""
    from bnbook.experiments import BOOK_DLN, BOOK_MLP
    from bnbook.train import train

    out = {}
    runs = [(model, book, norm) for model, book in (("dln", BOOK_DLN), ("mlp", BOOK_MLP)) for norm in NORMS[model]]
    for model, book, norm in runs:
        run = train(dataclasses.replace(book, norm=norm, steps=300), progress=False)
        arrays = {f"h/{k}": v for k, v in run.history.items()} | {f"s/{k}": v.numpy() for k, v in run.state.items()}
        # the bytes, not the values: equal bits is the claim
        out[f"{model}-{norm}"] = {k: np.ascontiguousarray(v).tobytes().hex() for k, v in sorted(arrays.items())}
    return out


def main(first: Path, second: Path) -> int:
    if not any(os.environ.get(v) for v in SECOND_CONFIGURATION):
        raise SystemExit(f"run this under the second configuration ({', '.join(SECOND_CONFIGURATION)} set)")
    env = {k: v for k, v in os.environ.items() if k not in SECOND_CONFIGURATION}
    code = "import json, sys; sys.path.insert(0, '.ci'); import same_bits; print(json.dumps(same_bits.short_runs()))"
    native = json.loads(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                       text=True).stdout)
    here = short_runs()
    second.mkdir(parents=True, exist_ok=True)
    for model, norms in NORMS.items():
        differ = [n for n in norms if native[f"{model}-{n}"] != here[f"{model}-{n}"]]
        if differ:
            print(f"{model.upper()} runs differ between the two configurations ({', '.join(differ)}): the chapters retrain them")
            continue
        files = sorted(first.glob(f"{model}-*.npz"))
        for f in files:
            shutil.copy2(f, second / f.name)
        print(f"{model.upper()} runs bit-identical under both configurations ({', '.join(norms)}, 300 steps with probes, "
              f"torch {torch.__version__}): {len(files)} cached {model.upper()} runs reused")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
