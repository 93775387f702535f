from reuse.workflow import run_rule, score_table

run_rule(snakemake, lambda sm: score_table(
    run_npzs=[f for f in sm.input if f.endswith(".npz")], run_jsons=[f for f in sm.input if f.endswith(".json")],
    out_parquet=sm.output.parquet, out_json=sm.output.json))
