"""bnbook: the package behind the executable textbook on batch normalization.

Flat modules named after the papers' concepts: `data` (CIFAR-10, the deep-linear-network task),
`norms` (BN from scratch, noisy BN, ℓp norms), `models` (VGG, deep linear network, MLP), `train`
(the one training loop and its `Config`), `probes` (activations, ICS, landscape), `results` (cached
runs), `theory` (Section 4's results, checked), `plots` (the book's figures).
"""

__version__ = "0.1.0"
