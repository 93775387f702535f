# Baseline runs: every dataset x model x seed, their checkpoints, metrics, predictions and logit caches.
#
# Checkpoint epochs may differ per model (a model's `train` block can override them), and Snakemake
# outputs cannot depend on wildcards, so there is one training rule per (dataset, model) pair.
# Gradient-boosted tree models (arch gbdt, reuse/models/gbdt.py) have their own two rules below.

for _ds, _model in [(d, m) for d, m in RUNS if not is_tree(config, m)]:

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


# A tree baseline: LightGBM on the training split, its model in LightGBM's text format at ckpt/e<R>.txt
# (R boosting rounds, its one checkpoint epoch), and the logit cache of its raw margins, which kd reads
# as it reads any past run's.
for _ds, _model in [(d, m) for d, m in RUNS if is_tree(config, m)]:
    _e = checkpoint_epochs(config, _model)[-1]

    rule:
        name:
            f"train_baseline__{_ds}__{_model}"
        input:
            **data_files(_ds),
        output:
            model=f"{run_dir(_ds, _model)}/ckpt/e{_e}.txt",
            metrics=f"{run_dir(_ds, _model)}/metrics.jsonl",
            run=f"{run_dir(_ds, _model)}/run.json",
            predictions=f"{run_dir(_ds, _model)}/predictions.npz",
        params:
            model=_model,
            model_cfg=config["models"][_model],
            recipe=recipe_for(config, _model),
        log:
            f"{run_dir(_ds, _model)}/train.log",
        threads: config["threads_per_job"]
        conda:
            "../envs/reuse.yaml"
        script:
            "scripts/train_tree.py"

    rule:
        name:
            f"logit_cache__{_ds}__{_model}"
        input:
            **data_files(_ds),
            model=f"{run_dir(_ds, _model)}/ckpt/e{_e}.txt",
            run=f"{run_dir(_ds, _model)}/run.json",
        output:
            cache_files(f"{run_dir(_ds, _model)}/logits/e{_e}"),
        params:
            cache=config["cache"],
        log:
            f"{run_dir(_ds, _model)}/logits/cache.log",
        threads: config["threads_per_job"]
        conda:
            "../envs/reuse.yaml"
        script:
            "scripts/tree_cache.py"


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
