"""The benchmark's anchors are the same networks as bnbook's, so that its ratios compare like with like."""

import dataclasses

import torch

from bnbook import bench
from bnbook.experiments import BOOK_VGG
from bnbook.train import build_model


def _shapes(model):
    return sorted(tuple(p.shape) for p in model.parameters())


def test_plain_vgg_has_bnbooks_parameters():
    for norm in ("none", "batch"):
        cfg = dataclasses.replace(BOOK_VGG, norm=norm)
        assert _shapes(bench.plain_vgg(cfg)) == _shapes(build_model(cfg))


def test_batched_vgg_computes_each_seed_separately():
    cfg = dataclasses.replace(BOOK_VGG, norm="batch")
    model = bench.BatchedVGG(cfg, seeds=3).train()
    x = torch.randn(4, 9, 32, 32)
    out = model(x)
    assert out.shape == (3, 4, 10)
    x2 = x.clone()
    x2[:, 3:6] += 1.0  # change seed 1's input only: seeds 0 and 2 are unaffected
    out2 = model(x2)
    assert torch.equal(out[0], out2[0]) and torch.equal(out[2], out2[2]) and not torch.equal(out[1], out2[1])
    n_single = sum(p.numel() for p in build_model(cfg).parameters())
    assert sum(p.numel() for p in model.parameters()) == 3 * n_single
