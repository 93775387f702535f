# Reusing past runs' weights (reuse.methods.weights): warm starts from a past run's checkpoint (plain,
# shrink-and-perturb, on a changed recipe or more data), soups of warm-started runs (uniform, greedy
# by held-out accuracy) and weight averaging within a run from scratch (SWA, EMA). One rule per
# (method, dataset, variant); each writes one run per seed with the standard run files.


for _method, _pairs in WEIGHTS_VARIANTS.items():
    for _ds, _variant in _pairs:
        _v = config[_method]["variants"][_variant]
        _dir = method_dir(_ds, _method, _variant)
        _recipe = weights_recipe(_method, _variant)
        _stats = _recipe["example_stats"] and _method != "soup"

        rule:
            name:
                f"{_method}__{_ds}__{_variant}"
            input:
                **data_files(_ds),
                past=lambda wc, m=_method, ds=_ds, variant=_variant: weights_inputs(m, ds, variant, wc.seed),
            output:
                ckpts=[f"{_dir}/ckpt/last.pt"],
                metrics=f"{_dir}/metrics.jsonl",
                run=f"{_dir}/run.json",
                predictions=f"{_dir}/predictions.npz",
                example_stats=[f"{_dir}/example_stats.npz"] if _stats else [],
            params:
                method=_method,
                variant=_variant,
                cfg=_v,
                model=_v["model"],
                model_cfg=config["models"][_v["model"]],
                recipe=_recipe,
                past=lambda wc, m=_method, ds=_ds, variant=_variant: weights_past(m, ds, variant, wc.seed),
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
                "scripts/train_weights.py"


rule summarize_weights:
    input:
        lambda wc: weights_run_files(wc.dataset, wc.method),
    output:
        f"{R}/{{dataset}}/{{method}}.csv",
    log:
        f"{R}/{{dataset}}/{{method}}.log",
    wildcard_constraints:
        method="|".join(WEIGHTS_METHODS),
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/summarize.py"


rule study_weights:
    input:
        runs=lambda wc: [f"{R}/{wc.dataset}/{m}.csv" for m in WEIGHTS_METHODS
                         if any(ds == wc.dataset for ds, _ in WEIGHTS_VARIANTS[m])],
        baselines=f"{R}/{{dataset}}/baselines.csv",
    output:
        f"{R}/{{dataset}}/studies/warm.csv",
    log:
        f"{R}/{{dataset}}/studies/warm.log",
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/weights_study.py"
