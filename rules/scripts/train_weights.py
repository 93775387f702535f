from pathlib import Path

from reuse.workflow import run_rule, train_averaging, train_soup, train_warm


def stage(sm):
    common = dict(data_dir=str(Path(sm.input.npz).parent), variant=sm.params.variant, cfg=dict(sm.params.cfg),
                  model_name=sm.params.model, model_cfg=dict(sm.params.model_cfg), recipe=dict(sm.params.recipe),
                  seed=int(sm.wildcards.seed), device=sm.params.device, progress=sm.params.progress,
                  outputs={"ckpts": {"last": sm.output.ckpts[0]}, "metrics": sm.output.metrics, "run": sm.output.run,
                           "predictions": sm.output.predictions,
                           "example_stats": sm.output.example_stats[0] if sm.output.example_stats else None})
    if sm.params.method == "warm":
        train_warm(past_run=sm.params.past["run"], past_ckpt=sm.params.past["ckpt"], **common)
    elif sm.params.method == "soup":
        train_soup(ingredient_runs=list(sm.params.past), **common)
    else:
        train_averaging(**common)


run_rule(snakemake, stage)
