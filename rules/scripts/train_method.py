from reuse.zygote import run

run(snakemake, "reuse.workflow:train_method")
