from reuse.workflow import run_rule, weights_study

run_rule(snakemake, lambda sm: weights_study(runs_csvs=list(sm.input.runs), baseline_csv=sm.input.baselines,
                                             out_csv=sm.output[0]))
