from reuse.workflow import run_stage

run_stage(snakemake)
