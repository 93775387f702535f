"""The encoder/head split of every architecture: head(encoder(x)) is the model's output."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from reuse.models.build import build_model
from reuse.models.heads import feature_dim, head_name, split_head

CASES = [  # arch, input shape, args, input maker
    ("mlp", (1, 40), {"hidden": [16, 8]}, lambda n, s: torch.randn(n, *s)),
    ("cnn1d", (1, 40), {"channels": 8}, lambda n, s: torch.randn(n, *s)),
    ("resnet20", (3, 32, 32), {"width": 4}, lambda n, s: torch.randn(n, *s)),
    ("resnet18", (3, 64, 64), {}, lambda n, s: torch.randn(n, *s)),
    ("text_cnn", (12,), {"vocab_size": 50, "embed_dim": 8, "channels": 4}, lambda n, s: torch.randint(1, 50, (n, *s))),
    ("embed_bag", (12,), {"vocab_size": 50, "embed_dim": 8}, lambda n, s: torch.randint(1, 50, (n, *s))),
]


@pytest.mark.parametrize("arch, shape, args, make", CASES, ids=[c[0] for c in CASES])
def test_head_of_the_encoder_is_the_model(arch, shape, args, make):
    torch.manual_seed(0)
    model = build_model(arch, list(shape), 7, **args).eval()
    x = make(3, shape)
    with torch.no_grad():
        want = model(x)
    width = feature_dim(model)
    encoder, head = split_head(model, probe=x)
    assert isinstance(head, nn.Linear) and head.out_features == 7 and head.in_features == width
    with torch.no_grad():
        feats = encoder(x)
        assert feats.shape == (3, width)
        torch.testing.assert_close(head(feats), want, rtol=1e-4, atol=1e-5)
    assert not any(isinstance(m, nn.Linear) and m is head for m in encoder.modules())


def test_a_model_whose_output_is_not_its_last_linear_is_refused():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return 2 * self.fc(x)

    m = Scaled()
    with pytest.raises(ValueError, match="not its last linear layer"):
        split_head(m, probe=torch.randn(2, 4))
    assert isinstance(m.fc, nn.Linear)  # left as it was
    with pytest.raises(ValueError, match="no nn.Linear"):
        head_name(nn.Sequential(nn.ReLU()))
