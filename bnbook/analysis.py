"""Summaries of runs: the numbers the chapters report (distribution shift, ICS, landscape ratios, …).

Functions here read `Run.history`/`Run.final` only; they never train. (This module is not part of the
run cache key: editing it does not invalidate cached runs.)
"""

from __future__ import annotations

import numpy as np

from .train import Run


# --- distributions and internal covariate shift (chapters 1 and 3) ---


# --- landscape (chapter 4) ---
