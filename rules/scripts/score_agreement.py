from reuse.zygote import run

run(snakemake, "reuse.workflow:rule_score_agreement")
