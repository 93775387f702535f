# Adversarial recycling (reuse.methods.adversarial): adversarial examples generated once against past
# baseline runs (one cache per dataset x cache), new runs trained with them (one rule per dataset x
# variant, one job per seed) or with examples generated online against their own model (the costly
# baseline), the robust accuracy of every such run and of the baseline runs of the same models, and
# the study that sets robustness against cost.


rule adv_cache:
    input:
        unpack(lambda wc: data_files(wc.dataset)),
        ckpts=lambda wc: [f"{r}/ckpt/e{adv_cache_epoch(config, wc.cache)}.pt"
                          for r in adv_cache_runs(wc.dataset, wc.cache)],
        runs=lambda wc: [f"{r}/run.json" for r in adv_cache_runs(wc.dataset, wc.cache)],
    output:
        npz=f"{R}/{{dataset}}/adv/{{cache}}/adv.npz",
        meta=f"{R}/{{dataset}}/adv/{{cache}}/meta.json",
    params:
        attack=lambda wc: config["adv"]["caches"][wc.cache]["attack"],
        runs=lambda wc: adv_cache_runs(wc.dataset, wc.cache),
        device=config["device"],
    log:
        f"{R}/{{dataset}}/adv/{{cache}}/adv_cache.log",
    wildcard_constraints:
        cache="|".join(config["adv"]["caches"]) or "(?!)",
    threads: config["threads_per_job"]
    resources:
        gpu=GPUS,
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/adv_cache.py"


for _ds, _variant in ADV_VARIANTS:
    _v = config["adv"]["variants"][_variant]
    _dir = f"{R}/{_ds}/{_v['model']}/adv/{_variant}/s{{seed}}"
    _cache_dir = f"{R}/{_ds}/adv/{_v['cache']}" if _v["cache"] is not None else None

    rule:
        name:
            f"adv__{_ds}__{_variant}"
        input:
            **data_files(_ds),
            cache=[f"{_cache_dir}/adv.npz", f"{_cache_dir}/meta.json"] if _cache_dir else [],
            past_runs=[f"{r}/run.json" for r in adv_cache_runs(_ds, _v["cache"])] if _cache_dir else [],
        output:
            ckpts=[f"{_dir}/ckpt/last.pt"],
            metrics=f"{_dir}/metrics.jsonl",
            run=f"{_dir}/run.json",
            predictions=f"{_dir}/predictions.npz",
        params:
            variant=_variant,
            cfg=_v,
            model=_v["model"],
            model_cfg=config["models"][_v["model"]],
            recipe=recipe_for(config, _v["model"]),
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
            "scripts/train_adv.py"


rule robust_eval:
    input:
        unpack(lambda wc: data_files(wc.dataset)),
        ckpt=lambda wc: robust_checkpoint(wc.dataset, wc.model, wc.kind, wc.seed),
        run=f"{R}/{{dataset}}/{{model}}/{{kind}}/s{{seed}}/run.json",
    output:
        f"{R}/{{dataset}}/{{model}}/{{kind}}/s{{seed}}/robust.json",
    params:
        attack=config["adv"]["robust"],
        device=config["device"],
    log:
        f"{R}/{{dataset}}/{{model}}/{{kind}}/s{{seed}}/robust.log",
    wildcard_constraints:
        kind=r"baseline|adv/[A-Za-z][A-Za-z0-9_]*",
    threads: config["threads_per_job"]
    resources:
        gpu=GPUS,
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/robust_eval.py"


rule summarize_adv:
    input:
        lambda wc: [f"{d}/run.json" for d in adv_run_dirs(wc.dataset)],
    output:
        f"{R}/{{dataset}}/adv.csv",
    log:
        f"{R}/{{dataset}}/adv.log",
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/summarize.py"


rule study_adv:
    input:
        runs=f"{R}/{{dataset}}/adv.csv",
        baselines=f"{R}/{{dataset}}/baselines.csv",
        robust=lambda wc: adv_robust_files(wc.dataset),
    output:
        f"{R}/{{dataset}}/studies/adv.csv",
    params:
        variants=config["adv"]["variants"],
    log:
        f"{R}/{{dataset}}/studies/adv.log",
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/study_adv.py"
