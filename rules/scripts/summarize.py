from reuse.workflow import run_rule, summarize

run_rule(snakemake, lambda sm: summarize(list(sm.input), sm.output[0]))
