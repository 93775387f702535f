"""Text datasets (kind ``text``): reading CSV and JSON lines, the BPE tokeniser, token data through
prepare/load, the text models, training, logit caches and scores on token ids."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reuse.data import Augment, load, prepare
from reuse.data.sources import check_root, read
from reuse.errors import ConfigError, DataError
from reuse.models import build_model
from tests.conftest import ROOT

WORDS = {"business": ["market", "stock", "profit", "bank"], "science": ["planet", "research", "lab", "genome"],
         "sports": ["goal", "match", "team", "coach"], "world": ["election", "minister", "treaty", "border"]}
CLASSES = sorted(WORDS)
FILLER = "the a of in on today said new after over with report people year first, and".split()
MAX_LEN = 16


def sentences(n: int = 200, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` sentences over 4 classes: filler words and two of the class's own words; every 10th is long
    (more than MAX_LEN tokens)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        c = CLASSES[i % 4]
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 9) + (20 if i % 10 == 0 else 0))]
        words += rng.sample(WORDS[c], 2)
        rng.shuffle(words)
        out.append((" ".join(words).capitalize(), c))
    return out


def write_csv(path: Path, rows, header=("label", "text")) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header:
            w.writerow(header)
        w.writerows((label, text) for text, label in rows)


def write_jsonl(path: Path, rows, label=lambda c: CLASSES.index(c)) -> None:
    with open(path, "w") as f:
        for text, c in rows:
            f.write(json.dumps({"text": text, "label": label(c), "id": 0}) + "\n")


@pytest.fixture(scope="module")
def text_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("text")
    rows = sentences()
    write_csv(root / "train.csv", rows[:160])
    write_csv(root / "test.csv", rows[160:])
    write_jsonl(root / "train.jsonl", rows[:160])
    write_jsonl(root / "test.jsonl", rows[160:])
    return root


def spec(root, ext="csv", **kw) -> dict:
    return {"kind": "text", "root": str(root), "train_file": f"train.{ext}", "test_file": f"test.{ext}",
            "max_len": MAX_LEN, "vocab_size": 300, **kw}


@pytest.fixture(scope="module")
def text_data_dir(text_root, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("text_data")
    prepare("tiny_text", spec(text_root), d / "data.npz", d / "dataset.json")
    return d


@pytest.fixture(scope="module")
def text_data(text_data_dir):
    return load(text_data_dir)


# ------------------------------------------------------------------------------------------- reading


def test_csv_with_string_labels_and_jsonl_with_int_labels(text_root):
    a, b = read("t", spec(text_root, "csv")), read("t", spec(text_root, "jsonl"))
    assert a.extra["classes"] == CLASSES and b.extra["classes"] == [0, 1, 2, 3]
    assert a.x_train.dtype == np.int32 and a.x_train.shape == (160, MAX_LEN) and a.x_test.shape == (40, MAX_LEN)
    np.testing.assert_array_equal(a.y_train, np.arange(160) % 4)   # same texts, same order, same labels
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert a.extra["tokenizer"] == b.extra["tokenizer"]
    assert a.num_classes == 4 and a.extra["pad_id"] == 0 and a.extra["vocab_size"] <= 300
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(a.extra["tokenizer"])
    assert tok.token_to_id("[PAD]") == 0 and tok.token_to_id("[UNK]") == 1
    assert (a.x_train[:, 0] != 0).all()  # every text has tokens; padding comes last


def test_headerless_csv_with_joined_text_fields(tmp_path):
    rows = sentences(40)
    for name, part in (("train.csv", rows[:32]), ("test.csv", rows[32:])):
        with open(tmp_path / name, "w", newline="") as f:
            csv.writer(f).writerows((CLASSES.index(c) + 1, t.split()[0], " ".join(t.split()[1:])) for t, c in part)
    raw = read("ag", spec(tmp_path, columns=["cls", "title", "description"], label_field="cls",
                          text_field=["title", "description"]))
    assert raw.extra["classes"] == [1, 2, 3, 4] and len(raw.y_train) == 32  # no row taken as a header
    with pytest.raises(DataError, match="no field 'text'"):  # without `columns` the first row is the header
        read("ref", spec(tmp_path))


def test_tokenisation_is_deterministic_across_processes(text_root, text_data_dir, tmp_path):
    d = tmp_path / "again"
    d.mkdir()
    code = ("import sys, json; from reuse.data import prepare; "
            "print(json.dumps(prepare('tiny_text', json.loads(sys.argv[1]), sys.argv[2] + '/data.npz', "
            "sys.argv[2] + '/dataset.json')['fingerprint']))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(spec(text_root)), str(d)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    first = json.loads((text_data_dir / "dataset.json").read_text())
    assert json.loads(out.stdout) == first["fingerprint"]
    again = json.loads((d / "dataset.json").read_text())
    assert again["tokenizer"] == first["tokenizer"]
    a, b = np.load(text_data_dir / "data.npz"), np.load(d / "data.npz")
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])


def test_truncation_statistics(text_root, text_data):
    t = text_data.meta["truncation"]
    n_long = sum(1 for i in range(160) if i % 10 == 0)  # the long sentences are far beyond MAX_LEN tokens
    assert t["train_file"]["truncated"] >= n_long / 160
    assert t["train_file"]["max_tokens"] > MAX_LEN and t["train_file"]["mean_tokens"] > 0
    x = text_data.train.x.numpy()
    assert (x[::10][:16] != 0).all()  # the long ones fill every position
    roomy = read("t", spec(text_root, max_len=200)).extra["truncation"]
    assert roomy["train_file"]["truncated"] == 0.0 and roomy["test_file"]["truncated"] == 0.0


def test_prepare_and_load_round_trip_token_data(text_data_dir, text_data):
    meta = text_data.meta
    assert meta["kind"] == "text" and meta["input_shape"] == [MAX_LEN] and meta["classes"] == CLASSES
    assert meta["vocab_size"] > 4 and meta["pad_id"] == 0 and meta["max_len"] == MAX_LEN
    raw = np.load(text_data_dir / "data.npz")
    assert raw["x_train"].dtype == np.int32
    x, y, idx = text_data.train.get(torch.tensor([3, 0, 7]))
    assert x.dtype == torch.int64 and torch.equal(x, torch.from_numpy(raw["x_train"][[3, 0, 7]]).long())
    assert y.tolist() == [3, 0, 3] and idx.tolist() == [3, 0, 7]
    assert text_data.input_shape == (MAX_LEN,) and text_data.num_classes == 4


def test_holdout(text_root, tmp_path):
    meta = prepare("t", {**spec(text_root), "holdout": 20}, tmp_path / "data.npz", tmp_path / "dataset.json")
    assert (meta["n_train"], meta["n_val"], meta["n_test"]) == (140, 20, 40)
    data = load(tmp_path)
    assert np.bincount(data.val.y.numpy()).tolist() == [5, 5, 5, 5]
    full = read("t", spec(text_root))
    ids = meta["holdout"]["source_ids"]
    np.testing.assert_array_equal(data.val.x.numpy(), full.x_train[ids])


# -------------------------------------------------------------------------------------------- errors


def test_missing_field_names_file_field_and_fields_present(text_root):
    with pytest.raises(DataError, match=r"train.csv .*no field 'body' \(fields present: \['label', 'text'\]\)"):
        read("t", spec(text_root, text_field="body"))
    with pytest.raises(DataError, match=r"train.jsonl \(line 1\) has no field 'y'.*'id', 'label', 'text'"):
        read("t", spec(text_root, "jsonl", label_field="y"))


def test_test_label_missing_from_training(tmp_path):
    rows = sentences(40)
    write_csv(tmp_path / "train.csv", [r for r in rows if r[1] != "world"])
    write_csv(tmp_path / "test.csv", rows)
    with pytest.raises(DataError, match=r"test.csv has label\(s\) \['world'\] that the training file .*train.csv lacks"):
        read("t", spec(tmp_path))


def test_bad_and_empty_files(tmp_path):
    rows = sentences(20)
    write_jsonl(tmp_path / "train.jsonl", rows)
    with open(tmp_path / "train.jsonl", "a") as f:
        f.write('{"text": "cut short", "label": \n')
    write_jsonl(tmp_path / "test.jsonl", rows)
    with pytest.raises(DataError, match=r"train.jsonl line 21 is not valid JSON"):
        read("t", spec(tmp_path, "jsonl"))
    (tmp_path / "train.jsonl").write_bytes(b'{"text": "a", "label": 1}\n\x80\xff binary\n')
    with pytest.raises(DataError, match=r"train.jsonl line 2 is not UTF-8 text"):
        read("t", spec(tmp_path, "jsonl"))
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(DataError, match=r"train.jsonl holds no examples"):
        read("t", spec(tmp_path, "jsonl"))
    (tmp_path / "train.csv").write_text("")
    write_csv(tmp_path / "test.csv", rows)
    with pytest.raises(DataError, match=r"train.csv is empty"):
        read("t", spec(tmp_path))
    (tmp_path / "train.csv").write_text('label,text\nsports,"an unclosed quote\n')
    with pytest.raises(DataError, match=r"train.csv is not a readable CSV file"):
        read("t", spec(tmp_path))
    write_csv(tmp_path / "train.csv", [(t, "") for t, _ in rows])
    with pytest.raises(DataError, match=r"train.csv \(data row 1, line 2\): label '' is missing"):
        read("t", spec(tmp_path))


def test_check_root_names_the_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"train_file .*nope.csv does not exist"):
        check_root("t", {**spec(tmp_path), "train_file": "nope.csv"})


def test_augmentation_of_tokens_is_refused(text_data):
    with pytest.raises(DataError, match="augmentation .* of token ids"):
        text_data.train.get(torch.arange(4), Augment(translate=2))


def test_config_check_refuses_what_cannot_work_on_text(text_root):
    from reuse.config import validate_config

    cfg = {"datasets": {"t": spec(text_root)},
           "models": {"cnn": {"arch": "text_cnn", "args": {"vocab_size": 100}}, "mlp": {"arch": "mlp"}},
           "train": {"augment": {"translate": 2}}}
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    msg = str(e.value)
    assert "models.mlp: arch 'mlp' cannot train on dataset 't'" in msg
    assert "models.cnn.args.vocab_size: 100 is smaller than dataset 't''s vocab_size 300" in msg
    assert "train.augment" in msg
    ok = {"datasets": {"t": spec(text_root)}, "models": {"cnn": {"arch": "text_cnn", "args": {"vocab_size": 300}}},
          "train": {"augment": {"translate": 0, "flip": False}}}
    validate_config(ok)


def test_check_vocab_at_train_time(text_data):
    from reuse.models.text import check_vocab

    check_vocab({"arch": "embed_bag", "args": {"vocab_size": text_data.meta["vocab_size"]}}, text_data.meta)
    with pytest.raises(ConfigError, match=r"vocab_size 10 but the tokeniser .* has \d+ tokens; set the model's args"):
        check_vocab({"arch": "embed_bag", "args": {"vocab_size": 10}}, text_data.meta)
    with pytest.raises(ConfigError, match="does not take token ids"):
        check_vocab({"arch": "mlp", "args": {}}, text_data.meta)


# -------------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("arch,args", [("text_cnn", {"embed_dim": 8, "channels": 4}), ("embed_bag", {"embed_dim": 8})])
def test_models_ignore_padding(arch, args):
    torch.manual_seed(0)
    m = build_model(arch, (12,), 3, vocab_size=50, **args).eval()
    x = torch.randint(1, 50, (5, 12))
    x[1, 4:] = 0          # a short text
    x[2, 1:] = 0          # one token
    x[3, :] = 0           # no tokens
    out = m(x)
    assert out.shape == (5, 3) and torch.isfinite(out).all()
    longer = torch.cat([x, torch.zeros(5, 7, dtype=torch.long)], dim=1)  # more padding after each text
    torch.testing.assert_close(m(longer), out, rtol=0, atol=1e-6)
    shorter = x[1:2, :4]  # the short text with no padding at all
    torch.testing.assert_close(m(shorter), out[1:2], rtol=0, atol=1e-6)
    m.train()
    torch.nn.functional.cross_entropy(m(x), torch.tensor([0, 1, 2, 0, 1])).backward()
    assert m.embed.weight.grad[0].abs().max() == 0  # the padding row learns nothing


def test_text_models_refuse_other_inputs():
    with pytest.raises(ConfigError, match="takes token ids of shape"):
        build_model("text_cnn", (3, 32, 32), 10)


# ------------------------------------------------------------------------------ training and reuse


RECIPE = {"epochs": 8, "batch_size": 16, "optimizer": {"name": "adamw", "lr": 0.02, "weight_decay": 0.01},
          "schedule": {"name": "cosine", "warmup_epochs": 0}, "checkpoint_epochs": [4], "checkpoint_every": 1,
          "augment": None}


@pytest.fixture(scope="module")
def trained(text_data, tmp_path_factory):
    from reuse.train import Trainer, seed_everything

    spec_ = {"arch": "text_cnn", "args": {"vocab_size": 300, "embed_dim": 16, "channels": 8},
             "input_shape": [MAX_LEN], "num_classes": 4}
    seed_everything(0)
    model = build_model(spec_["arch"], spec_["input_shape"], 4, **spec_["args"])
    d = tmp_path_factory.mktemp("text_run")
    state = Trainer(model, text_data, RECIPE, seed=0, state_dir=d, model_spec=spec_, progress="off").fit()
    return state, d


def test_training_learns(trained):
    state, d = trained
    last = state.metrics[-1]
    assert last["test_acc"] >= 0.75, state.metrics  # chance is 0.25
    assert last["train_loss"] < state.metrics[0]["train_loss"]
    assert last["train_flops"] > 0


def test_checkpoint_rebuilds_and_logit_cache_and_scores(trained, text_data, tmp_path):
    from reuse import ops
    from reuse.cache import LogitCache, views_for, write_logit_cache
    from reuse.scores import checkpoint_scores
    from reuse.train import build_from_checkpoint, evaluate, load_checkpoint
    from tests.helpers import loop_norms

    state, d = trained
    model = build_from_checkpoint(load_checkpoint(d / "last.pt"))  # from model_spec alone
    ev = evaluate(model, text_data.test, 64, torch.device("cpu"), keep_logits=True)
    assert ev["acc"] == pytest.approx(state.metrics[-1]["test_acc"])
    views = views_for(None, 4, 0)
    assert views == [{"kind": "clean"}]
    write_logit_cache(tmp_path / "c", model, text_data.train, views=views, fingerprint=text_data.train.fingerprint,
                      source={"path": "last.pt"}, batch_size=64)
    cache = LogitCache.open(tmp_path / "c", fingerprint=text_data.train.fingerprint)
    idx = torch.tensor([5, 1, 9])
    x, _, _ = text_data.train.get(idx)
    with torch.no_grad():
        torch.testing.assert_close(torch.as_tensor(cache.logits(idx, view=0)).float(), model.eval()(x),
                                   atol=2e-2, rtol=1e-2)
    scores, cost = checkpoint_scores(model, text_data.train, ["grand", "el2n"], batch_size=64,
                                     device=torch.device("cpu"))
    assert scores["grand"].shape == (160,) and np.isfinite(scores["grand"]).all() and cost["flops"] > 0
    x, y, _ = text_data.train.get(torch.arange(8))
    x[:, -3:] = 0  # repeated tokens and padding in one batch
    x[0, 1:] = 5
    ref = loop_norms(model.double(), x, y)
    torch.testing.assert_close(ops.per_example_grad_norms(model, x, y).double(), ref, rtol=1e-8, atol=0)
