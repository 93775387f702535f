from pathlib import Path

from reuse.workflow import run_rule, train_data_method

run_rule(snakemake, lambda sm: train_data_method(
    data_dir=str(Path(sm.input.npz).parent), method=sm.params.method, variant=sm.params.variant,
    cfg=dict(sm.params.cfg), model_name=sm.params.model, model_cfg=dict(sm.params.model_cfg),
    recipe=dict(sm.params.recipe), seed=int(sm.wildcards.seed),
    score_table_path=sm.input.scores[0] if sm.input.scores else None, score_epoch=sm.params.score_epoch,
    device=sm.params.device, progress=sm.params.progress,
    outputs={"ckpts": {"last": sm.output.ckpts[0]}, "metrics": sm.output.metrics, "run": sm.output.run,
             "predictions": sm.output.predictions,
             "example_stats": sm.output.example_stats[0] if sm.output.example_stats else None}))
