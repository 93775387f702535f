from reuse.workflow import run_rule, score_agreement

run_rule(snakemake, lambda sm: score_agreement(run_npzs=list(sm.input), out_csv=sm.output[0]))
