# Baseline runs: every dataset x model x seed, their checkpoints, metrics, predictions and logit caches.
#
# Checkpoint epochs may differ per model (a model's `train` block can override them), and Snakemake
# outputs cannot depend on wildcards, so there is one training rule per (dataset, model) pair.

for _ds, _model in RUNS:

    rule:
        name:
            f"train_baseline__{_ds}__{_model}"
        input:
            **data_files(_ds),
        output:
            ckpts=[f"{run_dir(_ds, _model)}/ckpt/e{e}.pt" for e in checkpoint_epochs(config, _model)],
            metrics=f"{run_dir(_ds, _model)}/metrics.jsonl",
            run=f"{run_dir(_ds, _model)}/run.json",
            predictions=f"{run_dir(_ds, _model)}/predictions.npz",
            example_stats=[f"{run_dir(_ds, _model)}/example_stats.npz"] if recipe_for(config, _model)["example_stats"] else [],
        params:
            model=_model,
            model_cfg=config["models"][_model],
            recipe=recipe_for(config, _model),
            epochs=checkpoint_epochs(config, _model),
            device=config["device"],
            progress=config["progress"],
            nproc=config["ddp_processes"],
        log:
            f"{run_dir(_ds, _model)}/train.log",
        threads: config["threads_per_job"]
        resources:
            gpu=GPUS * config["ddp_processes"],  # one GPU per data-parallel process
        conda:
            "../envs/reuse.yaml"
        script:
            "scripts/train_baseline.py"

    # One job writes the logit caches of all of a run's checkpoints (they all appear together when the
    # run finishes, so finer jobs would only add process start-ups).
    rule:
        name:
            f"logit_cache__{_ds}__{_model}"
        input:
            **data_files(_ds),
            ckpts=[f"{run_dir(_ds, _model)}/ckpt/e{e}.pt" for e in checkpoint_epochs(config, _model)],
        output:
            [f for e in checkpoint_epochs(config, _model) for f in cache_files(f"{run_dir(_ds, _model)}/logits/e{e}")],
        params:
            cache=config["cache"],
            device=config["device"],
        log:
            f"{run_dir(_ds, _model)}/logits/cache.log",
        threads: config["threads_per_job"]
        resources:
            gpu=GPUS,
        conda:
            "../envs/reuse.yaml"
        script:
            "scripts/logit_cache.py"


rule summarize_baselines:
    input:
        lambda wc: [f"{run_dir(wc.dataset, m, seed=s)}/run.json" for ds, m in RUNS if ds == wc.dataset for s in SEEDS],
    output:
        f"{R}/{{dataset}}/baselines.csv",
    log:
        f"{R}/{{dataset}}/baselines.log",
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/summarize.py"
