from pathlib import Path

from reuse.workflow import adv_cache, run_rule

run_rule(snakemake, lambda sm: adv_cache(
    data_dir=str(Path(sm.input.npz).parent), checkpoints=list(sm.input.ckpts), runs=list(sm.params.runs),
    attack=dict(sm.params.attack), out_npz=sm.output.npz, out_meta=sm.output.meta,
    batch_size=sm.params.attack["batch_size"], device=sm.params.device))
