"""Shared fixtures: small synthetic CIFAR-shaped data so unit tests never need the real data set."""

import pytest
import torch

from bnbook import data


@pytest.fixture
def fake_cifar(monkeypatch):
    """Replace `load_cifar10` by 512 train / 256 test random images with a learnable label rule."""
    gen = torch.Generator().manual_seed(0)
    sets = {}
    for split, n in (("train", 512), ("test", 256)):
        x = torch.randn(n, 3, 32, 32, generator=gen)
        y = (x[:, 0, :4, :4].mean((1, 2)) > 0).long() + 2 * (x[:, 1, :4, :4].mean((1, 2)) > 0).long()
        sets[split] = (x, y)
    monkeypatch.setattr(data, "load_cifar10", lambda split="train", root=None, standardize=True: sets[split])
    return sets


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty run cache."""
    monkeypatch.setenv("BNBOOK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
