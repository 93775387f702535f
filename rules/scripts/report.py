from pathlib import Path

from reuse.workflow import report, run_rule

# the results folder is the one holding summary.parquet
run_rule(snakemake, lambda sm: report(results=str(Path(sm.output.parquet).parent), config=dict(sm.params.config)))
