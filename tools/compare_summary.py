"""Compare two benchmark summaries run by run: does a change keep every number?

    python tools/compare_summary.py BEFORE/results/summary.csv AFTER/results/summary.csv [--columns test_acc,...]

Reads the run rows (``row == "run"``) of two ``summary.csv`` files (``reuse.report``), matches them
by (dataset, model, method, variant, seed), and prints how many runs each has, the runs only one has,
and, per column compared (default: the final and best test accuracy, test NLL and ECE, robust
accuracy, optimizer steps, training FLOPs and reused FLOPs), how many matched runs differ and the largest difference. Exits 1 when any run is missing
from either side or any compared value differs (exactly: the workflow is deterministic on one
machine), 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

KEY = ["dataset", "model", "method", "variant", "seed"]
DEFAULT = ["test_acc", "best_test_acc", "test_nll", "test_ece", "robust_acc", "steps", "train_flops", "reused_flops"]


def runs(path: str) -> pd.DataFrame:
    df = pd.read_csv(path)
    df = df[df["row"] == "run"] if "row" in df else df
    df = df.assign(variant=df["variant"].fillna(""))
    dup = df[df.duplicated(KEY, keep=False)]
    if not dup.empty:
        sys.exit(f"{path}: {len(dup)} rows share a (dataset, model, method, variant, seed)")
    return df.set_index(KEY)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--columns", default=",".join(DEFAULT), help="columns compared (comma-separated)")
    args = ap.parse_args(argv)
    a, b = runs(args.before), runs(args.after)
    only_a, only_b = a.index.difference(b.index), b.index.difference(a.index)
    both = a.index.intersection(b.index)
    print(f"runs: {len(a)} before, {len(b)} after, {len(both)} in both")
    for name, only in (("before", only_a), ("after", only_b)):
        for k in only:
            print(f"  only {name}: {'/'.join(map(str, k))}")
    bad = len(only_a) + len(only_b)
    for col in args.columns.split(","):
        if col not in a or col not in b:
            print(f"{col}: not in both summaries")
            bad += 1
            continue
        x, y = a.loc[both, col], b.loc[both, col]
        same = (x == y) | (x.isna() & y.isna())
        diff = (x - y).abs().max() if pd.api.types.is_numeric_dtype(x) else float("nan")
        print(f"{col}: {int((~same).sum())} of {len(both)} runs differ (largest difference {diff:.3g})")
        for k in same.index[~same][:10]:
            print(f"  {'/'.join(map(str, k))}: {x[k]} -> {y[k]}")
        bad += int((~same).sum())
    print("identical" if bad == 0 else "DIFFERENT")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
