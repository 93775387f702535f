# Baseline runs: every dataset x model x seed, their checkpoints, metrics, predictions and logit caches;
# and the baseline's budget curve: the same recipe at every other budget of `baseline.budgets`.
#
# Checkpoint epochs may differ per model (a model's `train` block can override them), and Snakemake
# outputs cannot depend on wildcards, so there is one training rule per (dataset, model) pair.
# Gradient-boosted tree models (arch gbdt, reuse/models/gbdt.py) have their own two rules below.
import re


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


# The budget curve: per (dataset, network model), one rule whose jobs are budget x seed. A run at budget
# b trains the model's recipe cut (or stretched) to ceil(b * epochs) epochs with its schedule rescaled
# (reuse.plan.budget_run_recipe) into R/<dataset>/<model>/baseline/b<b>/s<seed>/, run.json variant
# "b<b>" and budget b. It keeps only its final checkpoint (ckpt/last.pt): no logit cache, no
# example_stats, since no method reuses it; it is what a method run of the same budget is compared
# with. The budget-1 run is the baseline run above. Tree models get no budget curve.
for _ds, _model in BUDGET_RUNS if BUDGETS else []:
    _bdir = budget_dir(_ds, _model)

    rule:
        name:
            f"train_baseline__{_ds}__{_model}__budgets"
        input:
            **data_files(_ds),
        output:
            **budget_files(_bdir),
            example_stats=[],
        params:
            model=_model,
            model_cfg=config["models"][_model],
            recipe=lambda wc, m=_model: budget_run_recipe(config, m, BUDGETS[wc.budget]),
            epochs=["last"],
            variant=lambda wc: wc.budget,
            budget=lambda wc: BUDGETS[wc.budget],
            device=config["device"],
            progress=config["progress"],
            nproc=config["ddp_processes"],
        log:
            f"{_bdir}/train.log",
        wildcard_constraints:
            budget="|".join(re.escape(b) for b in BUDGETS),
        threads: config["threads_per_job"]
        resources:
            gpu=GPUS * config["ddp_processes"],
        conda:
            "../envs/reuse.yaml"
        script:
            "scripts/train_baseline.py"


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


# The baseline runs (budget 1 only: the studies take one baseline run per model and seed).
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
