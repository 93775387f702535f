from reuse.workflow import run_study

run_study(snakemake)
