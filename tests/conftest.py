"""Shared by the tests: small synthetic CIFAR-shaped data (so unit tests never need the real data set), an empty
run cache, the tiny configurations the tests train, and the comparison of two runs bit for bit."""

import numpy as np
import pytest
import torch

from bnbook import data
from bnbook.train import Config

TINY_VGG = Config(model="vgg", width=0.125, steps=8, batch_size=32, train_size=512, test_size=256, eval_every=4)
TINY_DLN = Config(model="dln", depth=6, hidden=5, train_size=40, lr=1e-5, steps=30, eval_every=10)


def assert_same_run(a, b):
    assert a.history.keys() == b.history.keys()
    for k in a.history:
        np.testing.assert_array_equal(a.history[k], b.history[k], err_msg=k)
    for k in a.state:
        assert torch.equal(a.state[k], b.state[k]), k


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
