"""Tabular data (dataset kind ``tabular``): one row per example from CSV or Parquet files, a target
column for the class, numeric and categorical feature columns encoded at prepare time.

The data are either one table, ``root/<file>``, split here into train and test (``test_fraction`` of
the rows, stratified by class and seeded by ``split_seed``, the same choice as a ``holdout``), or two
tables, ``root/<train_file>`` and ``root/<test_file>``. The format follows the extension: ``.csv``
(the first row names the columns) or ``.parquet``. The ids of a split are its rows in file order
(for one table: the rows left after the test rows were taken; ``dataset.json`` records the test
rows' source rows, ``split.test_source_rows``).

``target`` names the class column; its classes are the sorted distinct values of the training rows.
``numeric`` and ``categorical`` name the feature columns; when neither is given every other column is
a feature, numeric when all its values read as numbers and categorical otherwise, and the prepare log
says what was inferred. Numeric columns are standardised with the mean and standard deviation of the
training rows; a categorical column becomes one indicator per category of the training rows. Both are
fitted on the training rows only (without the ``holdout`` rows, which are held out of training) and
stored in ``dataset.json`` (``encoding``), so the prepared data carry them. An empty cell is missing:
``missing: error`` (the default) refuses it, naming the file, column and row; ``missing: impute``
fills a numeric cell with the training mean and a categorical one with the training rows' most
frequent category. A category that the training rows lack (in the test rows or held-out rows) is
refused under ``unseen: error`` (the default) or encoded as no category at all (all indicators 0)
under ``unseen: ignore``.

Inputs are ``(N, F)`` float32 features, already standardised (mean 0 and std 1 keep
:func:`reuse.data.sources.read` from measuring them again); no augmentation applies. Models for them
are the MLPs and gradient-boosted trees (:data:`TABULAR_MODELS`; trees only as baselines and cached
teachers, :mod:`reuse.models.gbdt`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from reuse.data.raw import RawData, register_reader
from reuse.errors import DataError
from reuse.plan import fixed_input_augment, runs

log = logging.getLogger(__name__)

DEFAULTS = {"test_fraction": 0.2, "split_seed": 0, "missing": "error", "unseen": "error"}
MISSING_POLICIES = ("error", "impute")
UNSEEN_POLICIES = ("error", "ignore")
FORMATS = (".csv", ".parquet")
#: the architectures that take a row of features (gbdt: gradient-boosted trees, :mod:`reuse.models.gbdt`)
TABULAR_MODELS = ("mlp", "hinton_mlp", "gbdt")


def tabular_files(spec: dict) -> dict[str, Path]:
    """The files a tabular dataset reads, by config key (``file``, or ``train_file`` and ``test_file``)."""
    root = Path(spec.get("root", "data")).expanduser()
    keys = ["file"] if spec.get("file") else ["train_file", "test_file"]
    return {k: root / spec[k] for k in keys if spec.get(k)}


class Table:
    """One file's columns as strings (``None`` for an empty cell), with where each row lies in it."""

    def __init__(self, path: Path, name: str):
        self.path = path
        self.name = name
        suffix = path.suffix.lower()
        if suffix not in FORMATS:
            raise DataError(f"dataset '{name}' (tabular): {path} has extension '{suffix}'; tables must be "
                            ".csv or .parquet")
        if not path.exists():
            raise DataError(f"dataset '{name}' (tabular): {path} does not exist; fix `root` or the file key")
        self.csv = suffix == ".csv"
        self.columns = self._read()
        self.n = len(next(iter(self.columns.values()))) if self.columns else 0
        if self.n == 0:
            raise DataError(f"dataset '{name}' (tabular): {path} is empty (no data rows)")

    def _read(self) -> dict[str, list[str | None]]:
        import pandas as pd

        try:
            if self.csv:
                df = pd.read_csv(self.path, dtype=str, keep_default_na=False, na_values=[])
            else:
                df = pd.read_parquet(self.path)
        except pd.errors.EmptyDataError as e:
            raise DataError(f"dataset '{self.name}' (tabular): {self.path} is empty ({e})") from e
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
            raise DataError(f"dataset '{self.name}' (tabular): {self.path} is not a readable table: {e}") from e
        return {str(c): [_cell(v) for v in df[c].tolist()] for c in df.columns}

    def where(self, i: int) -> str:
        """Row ``i`` (0-based, data rows) as a user finds it in the file."""
        return f"row {i + 1} (line {i + 2})" if self.csv else f"row {i + 1}"

    def column(self, col: str, role: str) -> list[str | None]:
        if col not in self.columns:
            raise DataError(f"dataset '{self.name}' (tabular): {self.path} has no column '{col}' ({role}); its "
                            f"columns are {list(self.columns)}; fix `{role}`")
        return self.columns[col]


def _cell(v) -> str | None:
    """A cell as a string, ``None`` when it is empty (an empty CSV field, a Parquet null or NaN)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))  # Parquet floats 1.0 read as "1", as the same CSV value does
    s = str(v).strip()
    return s if s else None


def _number(s: str) -> float | None:
    try:
        v = float(s)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _label(s: str):
    v = _number(s)
    return int(v) if v is not None and v.is_integer() else s


def infer_columns(table: Table, target: str) -> tuple[list[str], list[str]]:
    """Every column but ``target``: numeric when each non-empty value reads as a finite number."""
    numeric, categorical = [], []
    for col, values in table.columns.items():
        if col == target:
            continue
        present = [v for v in values if v is not None]
        (numeric if present and all(_number(v) is not None for v in present) else categorical).append(col)
    return numeric, categorical


def read_labels(table: Table, target: str) -> list:
    values = table.column(target, "target")
    for i, v in enumerate(values):
        if v is None:
            raise DataError(f"dataset '{table.name}' (tabular): {table.path} {table.where(i)}: the target "
                            f"column '{target}' is empty; every row needs a class")
    labels = [_label(v) for v in values]
    if len({type(v) for v in labels}) > 1:
        labels = [str(v) for v in values]  # mixed numbers and words: all are names
    return labels


def fit_encoding(tables: list[tuple[Table, np.ndarray]], numeric: list[str], categorical: list[str],
                 missing: str) -> dict[str, Any]:
    """Means, standard deviations and category lists of the training rows (``rows`` of each table);
    a column that holds a value that is not a number, or (``missing: error``) an empty cell, is
    refused naming the column, file and row."""
    enc: dict[str, Any] = {"numeric": {}, "categorical": {}}
    for col in numeric:
        vals = []
        for table, rows in tables:
            vals.append(_numeric_column(table, col, rows, missing))
        v = np.concatenate(vals)
        ok = v[~np.isnan(v)]
        if len(ok) == 0:
            raise DataError(f"dataset '{tables[0][0].name}' (tabular): numeric column '{col}' has no value in the "
                            "training rows; drop it from `numeric`")
        mean, std = float(ok.mean()), float(ok.std())
        enc["numeric"][col] = {"mean": mean, "std": std if std > 0 else 1.0}
    for col in categorical:
        seen: dict[str, int] = {}
        for table, rows in tables:
            values = table.column(col, "categorical")
            for i in rows:
                v = values[i]
                if v is None:
                    if missing == "error":
                        raise _missing(table, col, i)
                    continue
                seen[v] = seen.get(v, 0) + 1
        if not seen:
            raise DataError(f"dataset '{tables[0][0].name}' (tabular): categorical column '{col}' has no value in "
                            "the training rows; drop it from `categorical`")
        cats = sorted(seen, key=lambda c: (_number(c) is None, _number(c) or 0.0, c))  # codes in numeric order
        enc["categorical"][col] = {"categories": cats, "most_frequent": max(cats, key=lambda c: seen[c])}
    return enc


def _missing(table: Table, col: str, i: int) -> DataError:
    return DataError(f"dataset '{table.name}' (tabular): {table.path} {table.where(i)}: column '{col}' is empty; "
                     "fill it in, or set `missing: impute` (training mean / most frequent category)")


def _numeric_column(table: Table, col: str, rows: np.ndarray, missing: str) -> np.ndarray:
    values = table.column(col, "numeric")
    out = np.empty(len(rows), dtype=np.float64)
    for k, i in enumerate(rows):
        v = values[i]
        if v is None:
            if missing == "error":
                raise _missing(table, col, int(i))
            out[k] = np.nan
            continue
        x = _number(v)
        if x is None:
            raise DataError(f"dataset '{table.name}' (tabular): {table.path} {table.where(int(i))}: column '{col}' "
                            f"is numeric but holds {v!r}; fix the value, or list '{col}' under `categorical`")
        out[k] = x
    return out


def encode_rows(table: Table, rows: np.ndarray, enc: dict[str, Any], missing: str, unseen: str) -> np.ndarray:
    """``(len(rows), F)`` float32 features of ``table``'s ``rows`` under the fitted encoding ``enc``:
    the standardised numeric columns, then one indicator per category of each categorical column."""
    parts = []
    for col, st in enc["numeric"].items():
        v = _numeric_column(table, col, rows, missing)
        v[np.isnan(v)] = st["mean"]  # only under missing: impute (otherwise refused above)
        parts.append(((v - st["mean"]) / st["std"])[:, None])
    for col, c in enc["categorical"].items():
        values = table.column(col, "categorical")
        index = {cat: j for j, cat in enumerate(c["categories"])}
        onehot = np.zeros((len(rows), len(index)), dtype=np.float64)
        for k, i in enumerate(rows):
            v = values[i]
            if v is None:
                if missing == "error":
                    raise _missing(table, col, int(i))
                v = c["most_frequent"]
            if v not in index:
                if unseen == "error":
                    raise DataError(f"dataset '{table.name}' (tabular): {table.path} {table.where(int(i))}: column "
                                    f"'{col}' holds category {v!r}, which the training rows lack (they have "
                                    f"{c['categories'][:20]}); set `unseen: ignore` to encode it as no category")
                continue
            onehot[k, index[v]] = 1.0
        parts.append(onehot)
    return np.concatenate(parts, axis=1).astype(np.float32)


def feature_names(enc: dict[str, Any]) -> list[str]:
    return list(enc["numeric"]) + [f"{col}={cat}" for col, c in enc["categorical"].items() for cat in c["categories"]]


def encode_labels(labels: list, rows: np.ndarray, classes: list, table: Table, target: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    out = np.empty(len(rows), dtype=np.int64)
    for k, i in enumerate(rows):
        if labels[i] not in index:
            raise DataError(f"dataset '{table.name}' (tabular): {table.path} {table.where(int(i))}: target "
                            f"'{target}' is {labels[i]!r}, a class the training rows lack (they have {classes[:20]})")
        out[k] = index[labels[i]]
    return out


def _label_codes(labels: list) -> np.ndarray:
    """Labels as sortable codes (for stratified choices over raw labels of any kind)."""
    _, codes = np.unique(np.asarray([str(v) for v in labels]), return_inverse=True)
    return codes


@register_reader("tabular")
def read_tabular(name: str, spec: dict) -> RawData:
    from reuse.data.sources import HOLDOUT_SEED, holdout_ids

    spec = {**DEFAULTS, **spec}
    files = tabular_files(spec)
    target = spec["target"]
    if "file" in files:
        table = Table(files["file"], name)
        train_t = test_t = table
        labels = read_labels(table, target)
        n_test = round(spec["test_fraction"] * table.n)
        if not 0 < n_test < table.n:
            raise DataError(f"dataset '{name}' (tabular): test_fraction {spec['test_fraction']} of {table.n} rows "
                            f"gives {n_test} test rows; choose a fraction that leaves rows in both splits")
        test_rows = holdout_ids(_label_codes(labels), n_test, int(spec["split_seed"]))
        train_rows = np.setdiff1d(np.arange(table.n), test_rows)
        train_labels = test_labels = labels
    else:
        train_t, test_t = Table(files["train_file"], name), Table(files["test_file"], name)
        train_labels, test_labels = read_labels(train_t, target), read_labels(test_t, target)
        train_rows, test_rows = np.arange(train_t.n), np.arange(test_t.n)
    classes = sorted({train_labels[i] for i in train_rows}, key=lambda v: (isinstance(v, str), v))
    if len(classes) < 2:
        raise DataError(f"dataset '{name}' (tabular): target column '{target}' of {train_t.path} is constant "
                        f"({classes[0]!r} in every training row); a classifier needs at least two classes")
    y_train = encode_labels(train_labels, train_rows, classes, train_t, target)
    y_test = encode_labels(test_labels, test_rows, classes, test_t, target)

    numeric, categorical = spec.get("numeric"), spec.get("categorical")
    inferred = numeric is None and categorical is None
    if inferred:
        numeric, categorical = infer_columns(train_t, target)
        log.info("dataset '%s' (tabular): inferred from %s: numeric %s, categorical %s", name, train_t.path,
                 numeric, categorical)
    numeric, categorical = list(numeric or []), list(categorical or [])
    both = sorted(set(numeric) & set(categorical)) + [c for c in numeric + categorical if c == target]
    if both:
        raise DataError(f"dataset '{name}' (tabular): column '{both[0]}' is listed twice (numeric, categorical or "
                        "target); list each column once")
    if not numeric + categorical:
        raise DataError(f"dataset '{name}' (tabular): {train_t.path} has no feature column besides '{target}'")

    # the encoding is fitted on the rows a run trains on: without the ones `holdout` moves to `val`
    fit_rows = train_rows
    n_hold = int(spec.get("holdout", 0) or 0)
    if 0 < n_hold < len(y_train):
        fit_rows = np.delete(train_rows, holdout_ids(y_train, n_hold, HOLDOUT_SEED))
    enc = fit_encoding([(train_t, fit_rows)], numeric, categorical, spec["missing"])
    x_train = encode_rows(train_t, train_rows, enc, spec["missing"], spec["unseen"])
    x_test = encode_rows(test_t, test_rows, enc, spec["missing"], spec["unseen"])
    log.info("dataset '%s' (tabular): %d train and %d test rows, %d classes, %d features (%d numeric, %d "
             "categorical columns)", name, len(y_train), len(y_test), len(classes), x_train.shape[1], len(numeric),
             len(categorical))
    split = ({"file": str(files["file"]), "test_fraction": spec["test_fraction"], "split_seed": spec["split_seed"],
              "stratified": True, "test_source_rows": test_rows.tolist()} if "file" in files
             else {"train_file": str(files["train_file"]), "test_file": str(files["test_file"])})
    extra = {"classes": classes, "target": target, "features": feature_names(enc), "encoding": enc,
             "columns_inferred": inferred, "missing": spec["missing"], "unseen": spec["unseen"], "split": split,
             "encoding_rows": int(len(fit_rows))}
    return RawData(num_classes=len(classes), x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   mean=[0.0], std=[1.0], extra=extra)


def config_problems(config: dict) -> list[str]:
    """What a (schema-valid) config asks of tabular datasets that cannot work: no file or two ways to
    give one, a model that does not take a row of features, or augmentation of features."""
    tab = {ds for ds, spec in config["datasets"].items() if spec["kind"] == "tabular"}
    problems = []
    for ds in sorted(tab):
        spec = config["datasets"][ds]
        one, two = "file" in spec, ("train_file" in spec, "test_file" in spec)
        if one == any(two) or (not one and not all(two)):
            problems.append(f"datasets.{ds}: give either `file` (one table, split by test_fraction) or both "
                            "`train_file` and `test_file`")
        if spec.get("missing", "error") not in MISSING_POLICIES:
            problems.append(f"datasets.{ds}.missing: '{spec['missing']}'; choose one of {', '.join(MISSING_POLICIES)}")
        if spec.get("unseen", "error") not in UNSEEN_POLICIES:
            problems.append(f"datasets.{ds}.unseen: '{spec['unseen']}'; choose one of {', '.join(UNSEEN_POLICIES)}")
    return problems + feature_model_problems(config, tab, "tabular")


def feature_model_problems(config: dict, datasets: set[str], kind: str) -> list[str]:
    """The runs on ``datasets`` (whose examples are rows of features, of dataset kind ``kind``) whose model
    cannot take such rows, or that augment them."""
    problems = []
    for ds, model in runs(config):
        if ds not in datasets:
            continue
        arch = config["models"][model]["arch"]
        if arch not in TABULAR_MODELS:
            problems.append(f"models.{model}: arch '{arch}' cannot train on {kind} dataset '{ds}'; its examples are "
                            f"rows of features, which {', '.join(TABULAR_MODELS)} take: list the model's `datasets` "
                            "or change arch")
        problems += [p for p in [fixed_input_augment(config, model, ds, "features")] if p]
    return problems
