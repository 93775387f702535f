"""Text classification data (dataset kind ``text``): ``(text, label)`` rows from CSV or JSON-lines
files, tokenised at prepare time into int32 token ids.

The files are ``root/<train_file>`` and ``root/<test_file>``; the format follows the extension:
``.csv`` (read with pandas; the first row names the columns unless ``columns`` names them) or
``.jsonl`` / ``.json`` (one JSON object per line). ``text_field`` names the text (a list of fields is
joined with spaces, e.g. a title and a description), ``label_field`` the label. Labels may be ints or
strings: the classes are the sorted distinct labels of the training file, and class ``i`` is the
``i``-th of them (``dataset.json``: ``classes``).

The tokeniser is a byte-pair-encoding model (Sennrich et al. 2016) of the HuggingFace ``tokenizers``
library, trained on the training file only (never on the test file, never downloaded), with
``[PAD]`` = 0 and ``[UNK]`` = 1. BPE rather than WordPiece because the library's WordPiece trainer
numbers its vocabulary in hash-map order, which changes from one process to the next, while its BPE
trainer gives the same vocabulary and ids on every run; a prepared dataset's fingerprint must not
depend on which process prepared it. Each text becomes ``max_len`` ids, truncated and padded with 0;
``dataset.json`` holds the tokeniser (``tokenizer``, its JSON), ``vocab_size``, ``pad_id``,
``max_len`` and per file the fraction of texts that were truncated (``truncation``).

The token arrays are inputs as they are: no normalisation and no augmentation (a recipe that sets
``augment`` on a text dataset is refused). Models for them are in :mod:`reuse.models.text`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from reuse.data.raw import RawData, register_reader
from reuse.errors import DataError
from reuse.models.catalog import DEFAULT_VOCAB, TEXT_MODELS, model_vocab
from reuse.plan import fixed_input_augment, runs

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID = 0
DEFAULTS = {"text_field": "text", "label_field": "label", "max_len": 128, "vocab_size": DEFAULT_VOCAB,
            "lowercase": True}


def text_files(spec: dict) -> dict[str, Path]:
    """The training and test files a text dataset reads, by split."""
    root = Path(spec["root"]).expanduser()
    return {"train": root / spec["train_file"], "test": root / spec["test_file"]}


def _fields(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def read_table(path: Path, text_field, label_field: str, columns: list[str] | None = None,
               name: str = "?") -> tuple[list[str], list[Any]]:
    """The texts and raw labels of one file (CSV, or JSON lines), with a :class:`DataError` naming
    the file and the line or field when the file cannot be read."""
    text_fields = _fields(text_field)
    wanted = text_fields + [label_field]
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(f"dataset '{name}' (text): {path} does not exist; fix `root`, `train_file` or `test_file`")
    if suffix == ".csv":
        records, present, where = _read_csv(path, columns, name)
    elif suffix in (".jsonl", ".json"):
        records, present, where = _read_jsonl(path, name)
    else:
        raise DataError(f"dataset '{name}' (text): {path} has extension '{suffix}'; text files must be "
                        ".csv, .jsonl or .json (one JSON object per line)")
    if not records:
        raise DataError(f"dataset '{name}' (text): {path} holds no examples")
    texts, labels = [], []
    for i, rec in enumerate(records):
        missing = [f for f in wanted if f not in rec]
        if missing:
            fields = present if present is not None else sorted(rec)
            raise DataError(f"dataset '{name}' (text): {path}{where(i)} has no field '{missing[0]}' "
                            f"(fields present: {fields}); set `text_field` / `label_field`"
                            + (" or `columns`" if suffix == ".csv" else ""))
        parts = [rec[f] for f in text_fields]
        if any(p is None or (isinstance(p, float) and math.isnan(p)) for p in parts):
            raise DataError(f"dataset '{name}' (text): {path}{where(i)}: the text field is empty (null)")
        texts.append(" ".join(str(p) for p in parts))
        labels.append(_label(rec[label_field], path, where(i), name))
    return texts, labels


def _label(v, path: Path, where: str, name: str):
    if isinstance(v, (bool, np.bool_)):
        raise DataError(f"dataset '{name}' (text): {path}{where}: label {v!r} is a boolean; use ints or strings")
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
        return int(v)
    if isinstance(v, str) and v != "":
        return v
    raise DataError(f"dataset '{name}' (text): {path}{where}: label {v!r} is missing or not an int or string")


def _read_csv(path: Path, columns: list[str] | None, name: str):
    import pandas as pd

    try:
        df = pd.read_csv(path, header=None if columns else 0, names=columns, keep_default_na=False,
                         na_values=[])
    except pd.errors.EmptyDataError as e:
        raise DataError(f"dataset '{name}' (text): {path} is empty ({e})") from e
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"dataset '{name}' (text): {path} is not a readable CSV file: {e}") from e
    first = 1 if columns else 2  # the file line of the first data row (after the header)
    present = [str(c) for c in df.columns]
    return df.to_dict("records"), present, lambda i: f" (data row {i + 1}, line {i + first})"


def _read_jsonl(path: Path, name: str):
    records, lines = [], []
    with open(path, "rb") as fh:  # streamed, and decoded per line so that a bad byte is found by its line
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"dataset '{name}' (text): {path} line {n} is not UTF-8 text ({e.reason} at byte "
                                f"{e.start} of the line); the file needs one JSON object per line, in UTF-8") from e
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"dataset '{name}' (text): {path} line {n} is not valid JSON ({e.msg} at "
                                f"column {e.colno}); the file needs one JSON object per line") from e
            if not isinstance(rec, dict):
                raise DataError(f"dataset '{name}' (text): {path} line {n} is a JSON {type(rec).__name__}, "
                                "not an object with the text and label fields")
            records.append(rec)
            lines.append(n)
    return records, None, lambda i: f" (line {lines[i]})"


def class_list(labels: list, path: Path, name: str) -> list:
    kinds = {type(v) for v in labels}
    if len(kinds) > 1:
        ints = [v for v in labels if isinstance(v, int)][:1]
        strs = [v for v in labels if isinstance(v, str)][:1]
        raise DataError(f"dataset '{name}' (text): {path} mixes int and string labels (e.g. {ints[0]!r} and "
                        f"{strs[0]!r}); use one kind")
    return sorted(set(labels))


def encode_labels(labels: list, classes: list, path: Path, name: str, train_path: Path) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({v for v in labels if v not in index}, key=str)
    if unknown:
        raise DataError(f"dataset '{name}' (text): {path} has label(s) {unknown[:5]} that the training file "
                        f"{train_path} lacks (its classes: {classes[:20]}); every test label must occur in training")
    return np.asarray([index[v] for v in labels], dtype=np.int64)


def train_tokenizer(texts: list[str], vocab_size: int, lowercase: bool = True):
    """A BPE tokeniser trained on ``texts`` (deterministic: the same texts give the same JSON)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK))
    norm = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tok.normalizer = normalizers.Sequence(norm)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # whitespace and punctuation
    trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), special_tokens=[PAD, UNK], show_progress=False)
    tok.train_from_iterator(texts, trainer)
    assert tok.token_to_id(PAD) == PAD_ID
    return tok


def encode(tok, texts: list[str], max_len: int) -> tuple[np.ndarray, dict[str, float]]:
    """``(N, max_len)`` int32 ids, truncated and padded with ``PAD_ID``, and length statistics."""
    encs = tok.encode_batch(texts, add_special_tokens=False)
    out = np.full((len(texts), max_len), PAD_ID, dtype=np.int32)
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, e in enumerate(encs):
        ids = e.ids[:max_len]
        out[i, :len(ids)] = ids
        lengths[i] = len(e.ids)
    stats = {"truncated": float((lengths > max_len).mean()), "mean_tokens": float(lengths.mean()),
             "max_tokens": int(lengths.max()), "empty": int((lengths == 0).sum())}
    return out, stats


@register_reader("text")
def read_text(name: str, spec: dict) -> RawData:
    spec = {**DEFAULTS, **spec}
    files = text_files(spec)
    args = dict(text_field=spec["text_field"], label_field=spec["label_field"], columns=spec.get("columns"), name=name)
    x_train_text, l_train = read_table(files["train"], **args)
    x_test_text, l_test = read_table(files["test"], **args)
    classes = class_list(l_train, files["train"], name)
    class_list(l_test, files["test"], name)
    y_train = encode_labels(l_train, classes, files["train"], name, files["train"])
    y_test = encode_labels(l_test, classes, files["test"], name, files["train"])
    max_len = int(spec["max_len"])
    tok = train_tokenizer(x_train_text, spec["vocab_size"], bool(spec["lowercase"]))
    x_train, st_train = encode(tok, x_train_text, max_len)
    x_test, st_test = encode(tok, x_test_text, max_len)
    extra = {"classes": classes, "tokenizer": tok.to_str(), "tokenizer_kind": "bpe",
             "vocab_size": int(tok.get_vocab_size()), "pad_id": PAD_ID, "max_len": max_len,
             "truncation": {"train_file": st_train, "test_file": st_test}}
    # Token ids are not normalised: mean 0 and std 1 (one "channel") keep read() from measuring them.
    return RawData(num_classes=len(classes), x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   mean=[0.0], std=[1.0], extra=extra)


def is_token_data(x) -> bool:
    """Whether inputs are token ids (integer arrays or tensors other than uint8 images)."""
    dtype = str(x.dtype).replace("torch.", "")
    return dtype in ("int32", "int64")


def config_problems(config: dict) -> list[str]:
    """What a (schema-valid) config asks of text datasets that cannot work: a model that does not take
    token ids (or a text model on other data), an embedding table smaller than the tokeniser's
    vocabulary, or augmentation of token ids. (Methods that perturb inputs are checked against text
    datasets by the config check, through each method's ``perturbs_inputs``.)"""
    text = {ds for ds, spec in config["datasets"].items() if spec["kind"] == "text"}
    problems = []
    for ds, model in runs(config):
        m = config["models"][model]
        if (ds in text) != (m["arch"] in TEXT_MODELS):
            problems.append(f"models.{model}: arch '{m['arch']}' cannot train on dataset '{ds}' (kind "
                            f"{config['datasets'][ds]['kind']}): text datasets take {', '.join(TEXT_MODELS)} and "
                            "those take only text datasets; list the model's `datasets`")
            continue
        if ds not in text:
            continue
        need = int(config["datasets"][ds].get("vocab_size", DEFAULTS["vocab_size"]))
        have = model_vocab(m["arch"], m.get("args", {}))
        if have < need:
            problems.append(f"models.{model}.args.vocab_size: {have} is smaller than dataset '{ds}''s vocab_size "
                            f"{need}; the embedding table must cover the tokeniser's vocabulary")
        problems += [p for p in [fixed_input_augment(config, model, ds, "token ids")] if p]
    return problems
