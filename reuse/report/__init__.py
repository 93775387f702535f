"""The benchmark's verdict: a tidy table of every run (results/summary.parquet), seed statistics and
paired comparisons, the training efficiency frontier and static, offline Altair pages under
results/report/. See docs/report.md.

The names below load on first use (:mod:`reuse.lazy`): :func:`expected_outputs`, which every
Snakemake start calls, comes from :mod:`reuse.report.layout` without pandas, altair or torch.
"""

from reuse.lazy import exports

__all__ = ["AXES", "Options", "build", "collect", "expected_outputs"]
__getattr__, __dir__ = exports(__name__, {
    "reuse.report.build": ["Options", "build"],
    "reuse.report.collect": ["collect"],
    "reuse.report.layout": ["AXES", "expected_outputs"],
})
