"""Write the 1996 American National Election Study subset shipped inside statsmodels as a table that
the ``tabular`` dataset kind reads (``configs/election.yaml``):

    python tools/export_anes96.py data/election            # data/election/anes96.csv
    python tools/export_anes96.py data/election --parquet  # data/election/anes96.parquet

The data are ``statsmodels.datasets.anes96`` (public domain; the American National Election Studies,
https://electionstudies.org): 944 respondents, 10 variables; nothing is downloaded. ``vote`` (the
expected vote, 0 Clinton, 1 Dole) is written as the candidate's name; the coded answers (party
identification ``PID``, education ``educ``, household income ``income``) and the scales are written
as the integers statsmodels holds, and ``popul`` / ``logpopul`` as they are.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reuse.io import atomic_path

VOTE = {0: "Clinton", 1: "Dole"}
INTEGER = ["TVnews", "selfLR", "ClinLR", "DoleLR", "PID", "age", "educ", "income"]


def anes96():
    """The statsmodels table, with integer codes as ints and the vote as names."""
    from statsmodels.datasets import anes96 as source

    df = source.load_pandas().data.copy()
    df[INTEGER] = df[INTEGER].astype("int64")
    df["vote"] = df["vote"].astype("int64").map(VOTE)
    return df


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", help="folder to write anes96.csv (or anes96.parquet) into")
    ap.add_argument("--parquet", action="store_true", help="write Parquet instead of CSV")
    args = ap.parse_args(argv)
    out = Path(args.folder) / ("anes96.parquet" if args.parquet else "anes96.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    df = anes96()
    with atomic_path(out) as tmp:
        if args.parquet:
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)
    print(f"{out}: {len(df)} rows, columns {list(df.columns)}")
    return out


if __name__ == "__main__":
    main()
