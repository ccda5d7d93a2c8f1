"""Model shapes, layer numbering, initialization and the bias rule."""

import math

import pytest
import torch

from bnbook import models, norms


@pytest.mark.parametrize("config,n_conv", [("A", 8), ("D", 13)])
def test_vgg_shapes_and_layer_count(config, n_conv):
    m = models.vgg(config, width=0.125, norm="batch")
    assert len(m.blocks) == n_conv
    assert m(torch.randn(4, 3, 32, 32)).shape == (4, 10)
    assert all(isinstance(b.norm, norms.BatchNorm) for b in m.blocks)
    assert all(b.layer.bias is None for b in m.blocks)  # β subsumes the bias
    assert all(b.layer.bias is not None for b in models.vgg(config, 0.125, "none").blocks)


def test_vgg_width_and_glorot_init():
    m = models.vgg("A", width=0.5, seed=1)
    assert m.blocks[0].layer.out_channels == 32 and m.blocks[-1].layer.out_channels == 256
    w = m.blocks[3].layer.weight
    fan_in, fan_out = w.shape[1] * 9, w.shape[0] * 9
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert abs(w.var().item() - bound**2 / 3) < 0.05 * bound**2 / 3
    assert torch.equal(w, models.vgg("A", width=0.5, seed=1).blocks[3].layer.weight)
    assert not torch.equal(w, models.vgg("A", width=0.5, seed=2).blocks[3].layer.weight)


def test_vgg_he_init_keeps_the_relu_signal():
    m = models.vgg("A", width=0.5, seed=1, init="he")
    for b in m.blocks[2:]:  # enough weights for the sample std to be within 2% of N(0, 2/fan_in)'s
        w = b.layer.weight
        assert abs(w.std().item() / math.sqrt(2 / (w.shape[1] * 9)) - 1) < 0.02
    assert abs(m.head.weight.std().item() * math.sqrt(m.head.in_features) - 1) < 0.1  # no ReLU after the head
    assert all((b.layer.bias == 0).all() for b in m.blocks)
    assert torch.equal(m.blocks[3].layer.weight, models.vgg("A", width=0.5, seed=1, init="he").blocks[3].layer.weight)
    # the signal's second moment through the eight ReLU layers: He keeps it within 10x, Glorot loses 2x a layer
    x = torch.randn(64, 3, 32, 32)
    def last(model):
        h = model.blocks[0](x)
        for b in model.blocks[1:]:
            h = b(h)
        return h.pow(2).mean().item()
    with torch.no_grad():
        assert last(m) > 30 * last(models.vgg("A", width=0.5, seed=1))
    with pytest.raises(ValueError, match="init='lecun'"):
        models.vgg("A", init="lecun")
    with pytest.raises(ValueError, match="without init_std"):
        models.vgg("A", init="he", init_std=0.1)


def test_deep_linear_is_linear_and_normed_between_layers():
    m = models.deep_linear(depth=5, width=4, norm="batch")
    assert [type(b.norm) for b in m.blocks] == [norms.BatchNorm] * 4 + [torch.nn.Identity]
    plain = models.deep_linear(depth=5, width=4, norm="none")
    x = torch.randn(7, 4, dtype=torch.float64)
    plain = plain.double()
    prod = torch.eye(4, dtype=torch.float64)
    for b in plain.blocks:
        prod = b.layer.weight @ prod
    assert torch.allclose(plain(x), x @ prod.T, atol=1e-12)


def test_mlp_sigmoid_and_gaussian_init():
    m = models.mlp(hidden=100, depth=3, init_std=0.01, seed=0)
    assert len(m.blocks) == 3 and isinstance(m.blocks[0].act, torch.nn.Sigmoid)
    assert abs(m.blocks[0].layer.weight.std().item() - 0.01) < 0.0005
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_model_errors_name_the_choices():
    with pytest.raises(ValueError, match="unknown VGG config 'Z'"):
        models.vgg("Z")
    with pytest.raises(ValueError, match="unknown norm"):
        models.vgg("A", norm="groupnorm")


@pytest.mark.parametrize("norm", ["none", "batch", "noisy", "noise", "l2"])
def test_vgg_relu_in_place_changes_nothing_and_spares_a_hooked_norm_output(norm):
    """The ReLU after the norm runs in place (as `ReLU(inplace=True)`) unless a hook holds the norm's output:
    loss and gradients are the same bits either way, and the hooked output is the norm's, not rectified."""
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    y = torch.randint(0, 10, (16,))

    def loss_and_grads(hooked: bool):
        m = models.vgg("A", width=0.125, norm=norm, seed=3)
        seen = []
        hooks = [b.norm.register_forward_hook(lambda mod, i, o: seen.append((o._base is None, o.detach())))
                 for b in m.blocks] if hooked else []
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        for h in hooks:
            h.remove()
        return loss.detach(), [p.grad for p in m.parameters()], seen

    loss_a, grads_a, _ = loss_and_grads(hooked=False)
    loss_b, grads_b, seen = loss_and_grads(hooked=True)
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))
    assert all((o < 0).any() for _, o in seen)  # what the hook got was not rectified afterwards
    assert all(not_a_view for not_a_view, _ in seen)  # the norms return new tensors, not views (in-place needs that)
