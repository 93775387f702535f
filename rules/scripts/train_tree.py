from reuse.zygote import run

run(snakemake, "reuse.models.gbdt:rule_train")
