from reuse.workflow import run_rule, study_adv

run_rule(snakemake, lambda sm: study_adv(runs_csv=sm.input.runs, baseline_csv=sm.input.baselines,
                                         robust_jsons=list(sm.input.robust), variants=dict(sm.params.variants),
                                         out_csv=sm.output[0]))
