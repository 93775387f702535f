from pathlib import Path

from reuse.workflow import logit_cache, run_rule

run_rule(snakemake, lambda sm: logit_cache(
    data_dir=str(Path(sm.input.npz).parent), checkpoints=list(sm.input.ckpts),
    out_dirs=[str(Path(p).parent) for p in sm.output if p.endswith("meta.json")],
    cache_cfg=dict(sm.params.cache), device=sm.params.device))
