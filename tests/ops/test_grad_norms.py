"""Tests of reuse.ops.per_example_grad_norms (GraNd scores) against a per-example loop.

The oracle runs each example alone through the model in eval mode, takes the gradient
of its cross-entropy loss with torch.autograd.grad over the trainable parameters and
its norm. Op-level tests of the four kernels are in test_grad_norm_ops.py. Every test
runs with the compiled ops when reuse._C is in use and with the pure-PyTorch
references (backend="reference") always.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import reuse.ops as ops
from reuse.errors import ReuseError
from reuse.models import build_model
from reuse.ops import per_example_grad_norms
from reuse.ops.grad_norms import UnsupportedLayerError, register_norm_rule
from tests.helpers import loop_norms

COMPILED = ops.BACKEND == "compiled"
BACKENDS = [
    pytest.param("compiled", marks=pytest.mark.skipif(not COMPILED, reason="reuse._C is not in use")),
    "reference",
]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-3}


def assert_close_rel(out, ref, dtype):
    assert out.shape == ref.shape
    rel = ((out.double() - ref) / ref).abs().max().item()
    assert rel <= TOLERANCE[dtype], f"max relative error {rel:.3g}"


def warm_batchnorm(model: nn.Module, input_shape, seed=0):
    """Non-trivial running statistics and affine parameters for every BatchNorm."""
    g = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, *input_shape, generator=g, dtype=torch.float64).to(dtype) * 1.5 + 0.3)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64) * 0.3)
    model.eval()
    return model


# ------------------------------------------------------------------------ models


class SequenceModel(nn.Module):
    """Embedding, LayerNorm, 3-D and 4-D Linear, Conv1d with circular and 'same'
    (even kernel) padding, GroupNorm, BatchNorm1d on [B, C, L] and [B, C]."""

    def __init__(self, vocab=30, dim=12, num_classes=5):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim, padding_idx=0)
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, 18)
        self.act = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv1d(18, 12, 3, padding=1, padding_mode="circular")
        self.gn = nn.GroupNorm(3, 12)
        self.conv2 = nn.Conv1d(12, 12, 4, padding="same", groups=2, bias=False)
        self.bn = nn.BatchNorm1d(12)
        self.pair = nn.Linear(6, 6)  # on a 4-D input
        self.bn_flat = nn.BatchNorm1d(12)
        self.head = nn.Linear(12, num_classes)

    def forward(self, tokens):
        h = self.act(self.proj(self.norm(self.emb(tokens))))  # [B, T, 18]
        h = F.gelu(self.gn(self.conv1(h.transpose(1, 2))))  # [B, 12, T]
        h = self.bn(self.conv2(h))
        B, C, T = h.shape
        h = self.pair(h[:, :, : T // 6 * 6].reshape(B, C, -1, 6)).mean((2, 3))  # [B, 12]
        return self.head(torch.tanh(self.bn_flat(h)))


class ImageModel(nn.Module):
    """Conv2d with reflect padding, dilation, groups and stride; BatchNorm2d;
    LayerNorm over [C, H, W]; GroupNorm; a bias-only Linear."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect")
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=2)
        self.ln = nn.LayerNorm([8, 5, 5])
        self.conv3 = nn.Conv2d(8, 6, 2, padding="same", padding_mode="replicate")
        self.gn = nn.GroupNorm(2, 6, affine=True)
        self.fc = nn.Linear(6 * 25, num_classes)

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        x = self.ln(self.conv2(x))
        x = F.relu(self.gn(self.conv3(x)))
        return self.fc(x.flatten(1))


def make_model(name: str, dtype: torch.dtype):
    """(model, inputs, targets) with a fixed seed."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if name == "mlp":
        model, shape, classes = build_model("mlp", (1, 6, 6), 7, hidden=[20, 15]), (1, 6, 6), 7
    elif name == "cnn1d":
        model, shape, classes = build_model("cnn1d", (1, 40), 10), (1, 40), 10
    elif name == "resnet20":
        model, shape, classes = build_model("resnet20", (3, 16, 16), 10), (3, 16, 16), 10
    elif name == "resnet20_b":
        model, shape, classes = build_model("resnet20", (3, 8, 8), 6, shortcut="B"), (3, 8, 8), 6
    elif name == "resnet56":
        model, shape, classes = build_model("resnet56", (3, 8, 8), 10), (3, 8, 8), 10
    elif name == "image":
        model, shape, classes = ImageModel(), (3, 10, 10), 4
    elif name == "sequence":
        model = SequenceModel().to(dtype).train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randint(0, 30, (8, 13), generator=g))
            for m in (model.bn, model.bn_flat):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.3)
        tokens = torch.randint(0, 30, (7, 13), generator=g)
        tokens[:, -2:] = 0  # padding
        tokens[:, 3] = tokens[:, 4]  # repeated ids
        return model.eval(), tokens, torch.randint(0, 5, (7,), generator=g)
    else:
        raise ValueError(name)
    model = warm_batchnorm(model.to(dtype), shape)
    x = torch.randn(7, *shape, generator=g, dtype=torch.float64).to(dtype)
    return model, x, torch.randint(0, classes, (7,), generator=g)


MODELS = ["mlp", "cnn1d", "resnet20", "resnet20_b", "image", "sequence"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_matches_per_example_loop(name, dtype, backend):
    model, x, y = make_model(name, dtype)
    out = per_example_grad_norms(model, x, y, backend=backend)
    assert out.dtype == dtype and out.shape == (x.shape[0],) and not out.requires_grad
    assert_close_rel(out, loop_norms(model, x, y), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resnet56(backend):
    model, x, y = make_model("resnet56", torch.float64)
    x, y = x[:3], y[:3]
    assert_close_rel(per_example_grad_norms(model, x, y, backend=backend), loop_norms(model, x, y), torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resnet20_cifar_shape_float32(backend):
    torch.manual_seed(0)
    model = warm_batchnorm(build_model("resnet20", (3, 32, 32), 100), (3, 32, 32))
    x = torch.randn(5, 3, 32, 32)
    y = torch.randint(0, 100, (5,))
    assert_close_rel(per_example_grad_norms(model, x, y, backend=backend), loop_norms(model, x, y), torch.float32)


@pytest.mark.parametrize("batch", [1, 2, 5])
@pytest.mark.parametrize("name", ["resnet20", "sequence"])
def test_batch_sizes(name, batch):
    model, x, y = make_model(name, torch.float64)
    x, y = x[:batch], y[:batch]
    assert_close_rel(per_example_grad_norms(model, x, y), loop_norms(model, x, y), torch.float64)


@pytest.mark.skipif(not COMPILED, reason="reuse._C is not in use")
@pytest.mark.parametrize("name", ["resnet20", "image", "sequence"])
def test_backends_agree(name):
    model, x, y = make_model(name, torch.float64)
    compiled = per_example_grad_norms(model, x, y, backend="compiled")
    reference = per_example_grad_norms(model, x, y, backend="reference")
    torch.testing.assert_close(compiled, reference, rtol=1e-12, atol=0)


def test_soft_targets():
    model, x, _ = make_model("mlp", torch.float64)
    probs = torch.softmax(torch.randn(x.shape[0], 7, dtype=torch.float64), 1)
    assert_close_rel(per_example_grad_norms(model, x, probs), loop_norms(model, x, probs), torch.float64)


def test_empty_batch_and_no_trainable_parameters():
    model, x, y = make_model("mlp", torch.float32)
    assert per_example_grad_norms(model, x[:0], y[:0]).shape == (0,)
    model.requires_grad_(False)
    out = per_example_grad_norms(model, x, y)
    assert out.tolist() == [0.0] * x.shape[0]


def test_return_logits_gives_the_eval_forward():
    """The logits of the norms' own forward pass equal an eval-mode forward, also when there is no
    trainable parameter; the norms are unchanged and the model's mode is restored."""
    model, x, y = make_model("cnn1d", torch.float64)
    model.train()
    norms, logits = per_example_grad_norms(model, x, y, return_logits=True)
    torch.testing.assert_close(norms, per_example_grad_norms(model, x, y), rtol=0, atol=0)
    assert not logits.requires_grad and model.training
    with torch.no_grad():
        torch.testing.assert_close(logits, model.eval()(x), rtol=1e-12, atol=0)
    model.train().requires_grad_(False)
    norms, logits = per_example_grad_norms(model, x, y, return_logits=True)
    assert norms.tolist() == [0.0] * x.shape[0] and logits.shape == (x.shape[0], logits.shape[1]) and model.training


# ------------------------------------------------------------------ frozen parameters


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_parameters_are_skipped(backend):
    model, x, y = make_model("resnet20_b", torch.float64)
    model.conv.requires_grad_(False)  # the first layer: autograd starts further down
    model.blocks[0].bn1.weight.requires_grad_(False)  # weight frozen, bias trainable
    model.blocks[1].conv2.requires_grad_(False)
    model.fc.weight.requires_grad_(False)  # bias-only linear
    out = per_example_grad_norms(model, x, y, backend=backend)
    assert_close_rel(out, loop_norms(model, x, y), torch.float64)
    assert (out < per_example_grad_norms(model.requires_grad_(True), x, y, backend=backend)).all()


def test_frozen_layer_without_rule_is_fine():
    model, x, y = make_model("mlp", torch.float64)
    model.extra = Scale()
    model.extra.requires_grad_(False)
    out = per_example_grad_norms(model, x, y)
    assert_close_rel(out, loop_norms(model, x, y), torch.float64)


# ----------------------------------------------------------------------------- errors


class Scale(nn.Module):
    """A layer with a trainable parameter and no norm rule."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.s


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def test_unsupported_layer_raises_before_forward():
    counter = Counting()
    model = nn.Sequential(counter, nn.Flatten(), nn.Linear(4, 3), nn.Sequential(Scale()))
    x, y = torch.randn(2, 4), torch.tensor([0, 2])
    with pytest.raises(UnsupportedLayerError, match=r"module '3\.0' of type .*Scale has trainable parameters \['s'\]"):
        per_example_grad_norms(model, x, y)
    assert counter.calls == 0
    assert issubclass(UnsupportedLayerError, ReuseError) and issubclass(UnsupportedLayerError, TypeError)


def test_subclass_needs_its_own_rule():
    class MyLinear(nn.Linear):
        pass

    model = nn.Sequential(MyLinear(4, 3))
    with pytest.raises(UnsupportedLayerError, match=r"module '0' of type .*MyLinear"):
        per_example_grad_norms(model, torch.randn(2, 4), torch.tensor([0, 1]))


def test_register_norm_rule_for_a_custom_layer():
    class MyLinear(nn.Linear):
        pass

    @register_norm_rule(MyLinear)
    def rule(module, a, g, trainable, ops_):
        return ops_.linear(a, g, "bias" in trainable)

    try:
        torch.manual_seed(0)
        model = nn.Sequential(MyLinear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
        x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
        assert_close_rel(per_example_grad_norms(model, x, y), loop_norms(model, x, y), torch.float64)
    finally:
        from reuse.ops import grad_norms

        del grad_norms._RULES[MyLinear]


def test_batchnorm_without_running_stats_raises():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(2, 3, 5, 5))  # materialise the lazy layer
    with pytest.raises(UnsupportedLayerError, match=r"module '1'.*track_running_stats=False.*couple the examples"):
        per_example_grad_norms(model, torch.randn(2, 3, 5, 5), torch.tensor([0, 1]))


def test_embedding_scale_grad_by_freq_raises():
    model = nn.Sequential(nn.Embedding(10, 4, scale_grad_by_freq=True), nn.Flatten(), nn.Linear(12, 2))
    with pytest.raises(UnsupportedLayerError, match=r"scale_grad_by_freq=True"):
        per_example_grad_norms(model, torch.randint(0, 10, (2, 3)), torch.tensor([0, 1]))


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.fc(torch.tanh(self.fc(x))))


def test_layer_called_twice_raises():
    with pytest.raises(ReuseError, match=r"module 'fc' \(Linear\) was called 2 times"):
        per_example_grad_norms(Twice(), torch.randn(3, 4), torch.tensor([0, 1, 1]))


def test_tied_parameters_raise():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    model[2].weight = model[0].weight
    with pytest.raises(ReuseError, match=r"parameter '2.weight' is the same tensor as '0.weight'"):
        per_example_grad_norms(model, torch.randn(3, 4), torch.tensor([0, 1, 1]))


def test_inference_mode_raises():
    model, x, y = make_model("mlp", torch.float32)
    with torch.inference_mode(), pytest.raises(ReuseError, match=r"torch.inference_mode"):
        per_example_grad_norms(model, x, y)


def test_unknown_backend_raises():
    model, x, y = make_model("mlp", torch.float32)
    with pytest.raises(ValueError, match=r"backend must be one of"):
        per_example_grad_norms(model, x, y, backend="fast")


# ------------------------------------------------------------------------ model state


def snapshot(model):
    return (
        {name: m.training for name, m in model.named_modules()},
        {name: p.requires_grad for name, p in model.named_parameters()},
        {name: p.grad for name, p in model.named_parameters()},
        {name: p.detach().clone() for name, p in model.named_parameters()},
        {name: b.detach().clone() for name, b in model.named_buffers()},
    )


def assert_state(model, before):
    flags, requires, grads, values, buffers = before
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert {name: p.requires_grad for name, p in model.named_parameters()} == requires
    for name, p in model.named_parameters():
        assert p.grad is grads[name]  # the very same tensor (or None)
        assert torch.equal(p.detach(), values[name])
    for name, b in model.named_buffers():
        assert torch.equal(b, buffers[name]), name
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def mixed_state_model():
    model, x, y = make_model("resnet20_b", torch.float64)
    model.train()
    model.blocks[1].eval()
    model.blocks[2].conv1.requires_grad_(False)
    for p in list(model.parameters())[::3]:
        p.grad = torch.full_like(p, 7.0)
    return model, x, y


def test_state_restored_after_success():
    model, x, y = mixed_state_model()
    before = snapshot(model)
    x0 = x.clone()
    out = per_example_grad_norms(model, x, y)
    assert_state(model, before)
    assert torch.equal(x, x0) and not x.requires_grad
    # The result is the eval-mode one, although the model was in train mode.
    assert_close_rel(out, loop_norms(model, x, y), torch.float64)
    assert_state(model, before)


def test_inputs_requiring_grad_get_no_gradient():
    model, x, y = make_model("image", torch.float64)
    x.requires_grad_(True)
    out = per_example_grad_norms(model, x, y)
    assert x.grad is None
    assert_close_rel(out, loop_norms(model, x.detach(), y), torch.float64)


def test_works_under_no_grad():
    model, x, y = make_model("cnn1d", torch.float64)
    with torch.no_grad():
        out = per_example_grad_norms(model, x, y)
    assert_close_rel(out, loop_norms(model, x, y), torch.float64)


class FailsInForward(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom in forward")


class ModifiesInputInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(x)
        out = self.fc(h)
        h.mul_(2.0)  # changes fc's input after fc used it
        return self.head(out + h)


@pytest.mark.parametrize("failure", ["forward", "twice", "inplace", "rule"])
def test_state_restored_after_error(failure, monkeypatch):
    if failure == "forward":
        model, x, y = mixed_state_model()
        model.blocks[2].shortcut = nn.Sequential(model.blocks[2].shortcut, FailsInForward())
        expected = (RuntimeError, "boom in forward")
    elif failure == "twice":
        model, x, y = Twice().double(), torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 1, 1])
        expected = (ReuseError, "called 2 times")
    elif failure == "inplace":
        model, x, y = ModifiesInputInPlace().double(), torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 1, 1])
        expected = (ReuseError, r"input of module 'fc' was modified in place")
    else:  # a rule failing during the backward pass
        model, x, y = mixed_state_model()
        from reuse.ops import grad_norms

        entry = grad_norms._RULES[nn.BatchNorm2d]

        def broken(*args):
            raise RuntimeError("boom in rule")

        monkeypatch.setitem(grad_norms._RULES, nn.BatchNorm2d, grad_norms._RuleEntry(broken, entry.check, entry.params))
        expected = (RuntimeError, "boom in rule")
    model.train()
    before = snapshot(model)
    with pytest.raises(expected[0], match=expected[1]):
        per_example_grad_norms(model, x, y)
    assert_state(model, before)


# -------------------------------------------------------------------- reference path


def test_force_reference_environment():
    code = textwrap.dedent(
        """
        import warnings
        warnings.simplefilter("error")
        import torch, torch.nn as nn, torch.nn.functional as F
        import reuse.ops as ops
        from reuse.models import build_model
        assert ops.BACKEND == "reference", ops.BACKEND
        torch.manual_seed(0)
        model = build_model("resnet20", (3, 8, 8), 5).double().eval()
        x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
        y = torch.tensor([0, 4, 2])
        out = ops.per_example_grad_norms(model, x, y)
        params = list(model.parameters())
        for i in range(3):
            loss = F.cross_entropy(model(x[i:i+1]), y[i:i+1], reduction="sum")
            ref = sum(g.square().sum() for g in torch.autograd.grad(loss, params)).sqrt()
            assert abs(out[i].item() / ref.item() - 1) < 1e-10, (out[i], ref)
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "REUSE_FORCE_REFERENCE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"
