from __future__ import annotations

import pytest
import torch

from reuse.errors import ConfigError
from reuse.models import MODELS, build_model

# Parameter counts from He et al. (2016), Table 6 (in millions, rounded as the paper rounds).
PAPER_PARAMS = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85, "resnet110": 1.7}


@pytest.mark.parametrize("arch,expect", PAPER_PARAMS.items())
def test_cifar_resnets_match_the_paper(arch, expect):
    m = build_model(arch, (3, 32, 32), 10)
    n = sum(p.numel() for p in m.parameters()) / 1e6
    assert round(n, 2 if n < 1 else 1) == expect
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet_depth_and_shortcuts():
    m = build_model("resnet20", (3, 32, 32), 100, shortcut="B")
    assert sum(isinstance(x, torch.nn.Conv2d) for x in m.modules()) == 19 + 2  # 19 3x3 convs + 2 projections
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    with pytest.raises(ValueError, match="shortcut"):
        build_model("resnet20", (3, 32, 32), 10, shortcut="C")


def test_hinton_mlp_shape_and_dropout():
    m = build_model("hinton_mlp", (1, 28, 28), 10)
    linears = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(784, 1200), (1200, 1200), (1200, 10)]
    drops = sorted(x.p for x in m.modules() if isinstance(x, torch.nn.Dropout))
    assert drops == [0.2, 0.5, 0.5]


def test_cnn1d_on_mnist1d(tiny_data):
    m = build_model("cnn1d", tiny_data.input_shape, 10, channels=8)
    x, _, _ = next(tiny_data.train.batches(4))
    assert m(x).shape == (4, 10)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_imagenet_resnets(arch):
    m = build_model(arch, (3, 64, 64), 7).eval()
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_every_registered_model_builds():
    shapes = {"mlp": (1, 40), "hinton_mlp": (1, 28, 28), "cnn1d": (1, 40), "text_cnn": (16,), "embed_bag": (16,)}
    tokens = {"text_cnn", "embed_bag"}  # token ids in, not floats
    for arch in MODELS:
        shape = shapes.get(arch, (3, 32, 32))
        m = build_model(arch, shape, 3).eval()
        x = torch.randint(0, 100, (2, *shape)) if arch in tokens else torch.randn(2, *shape)
        assert m(x).shape == (2, 3)


def test_unknown_arch_and_argument_suggest_the_right_name():
    with pytest.raises(ConfigError, match="did you mean 'resnet56'"):
        build_model("resnet65", (3, 32, 32), 10)
    with pytest.raises(ConfigError, match="did you mean 'hidden'"):
        build_model("mlp", (1, 40), 10, hiden=[3])
