"""bnbook: the package behind the executable textbook on batch normalization.

Flat modules named after the papers' concepts: `data` (CIFAR-10, the deep-linear-network task),
`norms` (BN from scratch, noisy BN, ℓp norms), `models` (VGG, deep linear network, MLP), `train`
(the one training loop and its `Config`), `probes` (activations, ICS, landscape), `results` (cached
runs), `theory` (Section 4's results, checked), `plots` (the book's figures).
"""

import os

# Idle OpenMP threads sleep instead of spinning. With 2 training threads on a busy 2-core machine, a
# spinning thread waits a whole scheduler slice for its partner at every parallel region: measured
# here, 10x slower, with bit-identical results. Effective when bnbook is imported before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
