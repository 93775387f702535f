from pathlib import Path

from reuse.workflow import run_rule, train_baseline

run_rule(snakemake, lambda sm: train_baseline(
    nproc=int(sm.params.nproc), log_path=sm.log[0] if len(sm.log) else None, threads=sm.threads,
    data_dir=str(Path(sm.input.npz).parent), model_name=sm.params.model, model_cfg=dict(sm.params.model_cfg),
    recipe=dict(sm.params.recipe), seed=int(sm.wildcards.seed), device=sm.params.device, progress=sm.params.progress,
    outputs={"ckpts": dict(zip(sm.params.epochs, sm.output.ckpts)), "metrics": sm.output.metrics,
             "run": sm.output.run, "predictions": sm.output.predictions,
             "example_stats": sm.output.example_stats[0] if sm.output.example_stats else None}))
