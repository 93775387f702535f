# Data methods that read the score table: pruning, curricula, loss re-weighting. One rule per
# (method, dataset, variant); each trains one run per seed. Random choices (prune mode random,
# curriculum order random) need no scores, so they do not wait for the table.

for _method, _pairs in METHOD_VARIANTS.items():
    for _ds, _variant in _pairs:
        _v = config[_method]["variants"][_variant]
        _dir = method_dir(_ds, _method, _variant)
        _recipe = recipe_for(config, _v["model"])
        _scored = needs_scores(_v)

        rule:
            name:
                f"{_method}__{_ds}__{_variant}"
            input:
                **data_files(_ds),
                scores=[f"{R}/{_ds}/scores.parquet"] if _scored else [],
                past_runs=[f"{run_dir(_ds, SCORE_MODEL, seed=s)}/run.json" for s in score_seeds(config)] if _scored else [],
            output:
                ckpts=[f"{_dir}/ckpt/last.pt"],  # epochs are set at run time (pruning matches steps)
                metrics=f"{_dir}/metrics.jsonl",
                run=f"{_dir}/run.json",
                predictions=f"{_dir}/predictions.npz",
                example_stats=[f"{_dir}/example_stats.npz"] if _recipe["example_stats"] else [],
            params:
                method=_method,
                variant=_variant,
                cfg=_v,
                model=_v["model"],
                model_cfg=config["models"][_v["model"]],
                recipe=_recipe,
                score_epoch=variant_score_epoch(config, _method, _variant),
                device=config["device"],
                progress=config["progress"],
            log:
                f"{_dir}/train.log",
            threads: config["threads_per_job"]
            resources:
                gpu=GPUS,
            conda:
                "../envs/reuse.yaml"
            script:
                "scripts/train_data_method.py"


rule summarize_data_method:
    input:
        lambda wc: method_run_files(wc.dataset, wc.method),
    output:
        f"{R}/{{dataset}}/{{method}}.csv",
    log:
        f"{R}/{{dataset}}/{{method}}.log",
    wildcard_constraints:
        method="|".join(DATA_METHODS),
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/summarize.py"


rule study_data_method:
    input:
        runs=f"{R}/{{dataset}}/{{method}}.csv",
        baselines=f"{R}/{{dataset}}/baselines.csv",
    output:
        f"{R}/{{dataset}}/studies/{{method}}.csv",
    log:
        f"{R}/{{dataset}}/studies/{{method}}.log",
    wildcard_constraints:
        method="|".join(DATA_METHODS),
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/study.py"
