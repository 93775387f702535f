from reuse.workflow import run_rule, study_table

run_rule(snakemake, lambda sm: study_table(runs_csv=sm.input.runs, baseline_csv=sm.input.baselines,
                                           method=sm.wildcards.method, out_csv=sm.output[0]))
