from pathlib import Path

from reuse.workflow import run_rule, train_adv

run_rule(snakemake, lambda sm: train_adv(
    data_dir=str(Path(sm.input.npz).parent), variant=sm.params.variant, cfg=dict(sm.params.cfg),
    model_name=sm.params.model, model_cfg=dict(sm.params.model_cfg), recipe=dict(sm.params.recipe),
    seed=int(sm.wildcards.seed), cache_dir=str(Path(sm.input.cache[0]).parent) if sm.input.cache else None,
    device=sm.params.device, progress=sm.params.progress,
    outputs={"ckpts": {"last": sm.output.ckpts[0]}, "metrics": sm.output.metrics, "run": sm.output.run,
             "predictions": sm.output.predictions}))
