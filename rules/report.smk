# The benchmark's verdict (reuse.report): one tidy table of every run and aggregate, the efficiency
# frontier, per-method pages and the budget recommendations, as static pages that open offline.
# Every figure is also registered for `snakemake --report report.html`, with its caption in
# rules/report/. After a failed run (`--keep-going` leaves this rule unrun),
# `python -m reuse report --results results --config config.yaml` builds the same pages from what
# exists and marks the missing runs.

_REPORT = report_targets()
_CAPTIONS = {"frontier": "report/frontier.rst", "accuracy": "report/accuracy.rst", "curves": "report/curves.rst"}
_CATEGORIES = {"frontier": "Efficiency frontier", "accuracy": "Accuracy per method", "curves": "Learning curves"}


rule report:
    input:
        report_inputs(),
    output:
        parquet=_REPORT["summary"][0],
        csv=report(_REPORT["summary"][1], caption="report/summary.rst", category="Tables"),
        recommendations=report(_REPORT["tables"][0], caption="report/recommendations.rst", category="Tables"),
        pages=[report(p, caption="report/page.rst", category="Pages", labels={"page": Path(p).stem})
               for p in _REPORT["pages"]],
        figures=[
            report(f, caption=_CAPTIONS[kind], category=_CATEGORIES[kind],
                   labels={"figure": Path(f).stem, "format": Path(f).suffix.lstrip(".")})
            for kind, files in _REPORT["figures"].items()
            for f in files
        ],
    params:
        config=config,
    log:
        f"{R}/report.log",
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/report.py"
