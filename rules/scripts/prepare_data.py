from reuse.workflow import prepare_data, run_rule

run_rule(snakemake, lambda sm: prepare_data(sm.wildcards.dataset, dict(sm.params.spec), sm.output.npz, sm.output.meta))
