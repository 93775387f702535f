"""The benchmark's verdict: a tidy table of every run (results/summary.parquet), seed statistics and
paired comparisons, the training efficiency frontier and static, offline Altair pages under
results/report/. See docs/report.md."""

from reuse.report.build import Options, build, expected_outputs
from reuse.report.collect import AXES, collect

__all__ = ["AXES", "Options", "build", "collect", "expected_outputs"]
