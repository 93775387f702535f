from reuse.zygote import run

run(snakemake, "reuse.workflow:rule_logit_cache")
