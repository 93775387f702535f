"""Small, fast text classifiers over token ids (dataset kind ``text``, :mod:`reuse.data.text`).

Inputs are ``(B, L)`` int64 token ids with ``0`` the padding token. The vocabulary size is an
explicit model argument (``vocab_size``), so a checkpoint's ``model_spec`` alone rebuilds the model;
it must be at least the dataset's tokeniser vocabulary (``dataset.json``: ``vocab_size``), which the
config check (against the dataset's ``vocab_size`` key) and :func:`check_vocab` (at train time,
against the trained tokeniser) enforce. Padding never reaches the output: its embedding row is zero
and gets no gradient (``padding_idx``), and pooling ignores it, so appending padding to a text leaves
its logits unchanged.

:data:`TEXT_MODELS` (the models registered here) and :func:`model_vocab` come from
:mod:`reuse.models.catalog`, which the config check reads without importing torch.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from reuse.errors import ConfigError
from reuse.models.catalog import DEFAULT_VOCAB, TEXT_MODELS, model_vocab
from reuse.models.registry import register_model

PAD_ID = 0


class TextCNN(nn.Module):
    """Kim (2014)'s CNN for sentence classification: embedding, one Conv1d per window width with ReLU,
    max-pooling over time of each feature map, dropout, linear.

    The convolutions are wide (``k - 1`` zeros on each side) and a window that covers no real token
    is left out of the max, so the pooled features depend on the tokens alone, not on how much padding
    follows them. A text with no tokens pools to zeros.
    """

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int, widths, channels: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.widths = tuple(int(k) for k in widths)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, k, padding=k - 1) for k in self.widths)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels * len(self.widths), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x != PAD_ID).unsqueeze(1).to(torch.float32)     # (B, 1, L)
        h = self.embed(x).transpose(1, 2) * mask                # (B, E, L)
        pooled = []
        for k, conv in zip(self.widths, self.convs):
            a = F.relu(conv(h))                                 # (B, C, L + k - 1)
            # A window is real when it covers at least one token.
            real = F.conv1d(mask, mask.new_ones(1, 1, k), padding=k - 1) > 0
            a = a.masked_fill(~real, float("-inf")).amax(dim=2)
            pooled.append(torch.where(torch.isfinite(a), a, torch.zeros_like(a)))
        return self.fc(self.dropout(torch.cat(pooled, dim=1)))


class EmbedBag(nn.Module):
    """fastText (Joulin et al. 2017): the mean of the tokens' embeddings, then a linear classifier.

    Padding is left out of the mean; a text with no tokens maps to a zero vector.
    """

    def __init__(self, vocab_size: int, num_classes: int, embed_dim: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x != PAD_ID).unsqueeze(2).to(torch.float32)     # (B, L, 1)
        h = (self.embed(x) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.fc(self.dropout(h))


def _check_shape(arch: str, input_shape) -> None:
    if len(input_shape) != 1:
        raise ConfigError(f"model arch '{arch}' takes token ids of shape (max_len,), got input shape "
                          f"{tuple(input_shape)}; use it on a dataset of kind text")


@register_model("text_cnn")
def text_cnn(input_shape, num_classes, vocab_size=DEFAULT_VOCAB, embed_dim=128, widths=(3, 4, 5), channels=100,
             dropout=0.5):
    """Kim (2014): ``channels`` feature maps per window width in ``widths`` (his 100 maps of widths
    3, 4, 5 and dropout 0.5), over ``embed_dim``-dimensional embeddings learned from scratch (his
    CNN-rand)."""
    _check_shape("text_cnn", input_shape)
    return TextCNN(int(vocab_size), num_classes, int(embed_dim), widths, int(channels), float(dropout))


@register_model("embed_bag")
def embed_bag(input_shape, num_classes, vocab_size=DEFAULT_VOCAB, embed_dim=64, dropout=0.0):
    """fastText (Joulin et al. 2017, who use 10 hidden units): mean of ``embed_dim``-dimensional
    token embeddings, then linear."""
    _check_shape("embed_bag", input_shape)
    return EmbedBag(int(vocab_size), num_classes, int(embed_dim), float(dropout))


def check_vocab(spec: dict, meta: dict) -> None:
    """Raise :class:`ConfigError` unless the model of ``spec`` (arch, args) consumes the token ids of
    the prepared dataset with ``meta`` (dataset.json): a text model whose embedding table covers the
    tokeniser's vocabulary. Datasets of other kinds need no check."""
    if meta.get("kind") != "text":
        return
    vocab = model_vocab(spec["arch"], spec.get("args", {}))
    if vocab is None:
        raise ConfigError(f"model arch '{spec['arch']}' does not take token ids; dataset '{meta['name']}' is text: "
                          f"use one of {', '.join(TEXT_MODELS)}")
    if vocab < meta["vocab_size"]:
        raise ConfigError(f"model arch '{spec['arch']}' has vocab_size {vocab} but the tokeniser of dataset "
                          f"'{meta['name']}' has {meta['vocab_size']} tokens; set the model's args.vocab_size "
                          f"to at least {meta['vocab_size']} (or lower the dataset's vocab_size)")
