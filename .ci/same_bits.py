"""CI helper: copy the deep linear network's cached runs into the second configuration's cache, if and only if
that configuration computes them bit for bit as the first one did.

    python .ci/same_bits.py FIRST_CACHE SECOND_CACHE   (run with the second configuration's environment)

The deep linear network multiplies 10 x 10 matrices: ATen and oneDNN take the same code path for them with
or without the AVX2 restriction, so its runs come out bit-identical under both (measured: every DLN run of the
book). Retraining them would cost CI a quarter of an hour for no new information. This script proves the
premise on this machine instead of assuming it: it trains a short DLN run of every normalization, with every
probe the book uses, in this process (the second configuration) and compares it bit for bit with the same
run trained in a subprocess under the first configuration (the environment without the variables below).
Only if all of them agree are the first cache's DLN runs copied; otherwise nothing is, and the chapters
retrain them.
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
NORMS = ("none", "batch", "l1", "l2", "linf")


def short_runs() -> dict[str, dict[str, list]]:
    """Histories and final weights of 300-step DLN runs of every normalization, as JSON-able lists."""
    from bnbook.experiments import BOOK_DLN
    from bnbook.train import train

    out = {}
    for norm in NORMS:
        run = train(dataclasses.replace(BOOK_DLN, norm=norm, steps=300), progress=False)
        arrays = {f"h/{k}": v for k, v in run.history.items()} | {f"s/{k}": v.numpy() for k, v in run.state.items()}
        # the bytes, not the values: equal bits is the claim
        out[norm] = {k: np.ascontiguousarray(v).tobytes().hex() for k, v in sorted(arrays.items())}
    return out


def main(first: Path, second: Path) -> int:
    if not any(os.environ.get(v) for v in SECOND_CONFIGURATION):
        raise SystemExit(f"run this under the second configuration ({', '.join(SECOND_CONFIGURATION)} set)")
    env = {k: v for k, v in os.environ.items() if k not in SECOND_CONFIGURATION}
    code = "import json, sys; sys.path.insert(0, '.ci'); import same_bits; print(json.dumps(same_bits.short_runs()))"
    native = json.loads(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                       text=True).stdout)
    here = short_runs()
    differ = [n for n in NORMS if native[n] != here[n]]
    if differ:
        print(f"DLN runs differ between the two configurations ({', '.join(differ)}): the chapters retrain them")
        return 0
    second.mkdir(parents=True, exist_ok=True)
    files = sorted(first.glob("dln-*.npz"))
    for f in files:
        shutil.copy2(f, second / f.name)
    print(f"DLN runs bit-identical under both configurations ({', '.join(NORMS)}, 300 steps with probes, "
          f"torch {torch.__version__}): {len(files)} cached DLN runs reused")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
