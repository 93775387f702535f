from pathlib import Path

from reuse.workflow import robust_eval_run, run_rule

run_rule(snakemake, lambda sm: robust_eval_run(
    data_dir=str(Path(sm.input.npz).parent), checkpoint=sm.input.ckpt, attack=dict(sm.params.attack),
    out_json=sm.output[0], batch_size=sm.params.attack["batch_size"], device=sm.params.device))
