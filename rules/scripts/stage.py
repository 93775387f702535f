from reuse.zygote import run

run(snakemake, "reuse.workflow:run_stage")
