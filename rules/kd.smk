# Distillation from past runs: every dataset x KD variant x student seed. The teachers are baseline
# runs' logit caches (or, for `online: true`, their checkpoints), chosen by rules/common.smk.


for _ds, _variant in KD_VARIANTS:
    _v = config["kd"]["variants"][_variant]
    _student = _v["student"]
    _dir = f"{R}/{_ds}/{_student}/kd/{_variant}/s{{seed}}"
    _last = kd_recipe(config, _variant)["epochs"]

    rule:
        name:
            f"kd__{_ds}__{_variant}"
        input:
            **data_files(_ds),
            teachers=lambda wc, ds=_ds, variant=_variant: kd_teacher_inputs(ds, variant, wc.seed),
        output:
            ckpts=[f"{_dir}/ckpt/e{_last}.pt"],
            metrics=f"{_dir}/metrics.jsonl",
            run=f"{_dir}/run.json",
            predictions=f"{_dir}/predictions.npz",
        params:
            variant=_variant,
            cfg=_v,
            student=_student,
            student_cfg=config["models"][_student],
            recipe=kd_recipe(config, _variant),
            teacher_runs=lambda wc, ds=_ds, variant=_variant: kd_teacher_runs(ds, variant, wc.seed),
            teacher_epochs=kd_teacher_epochs(config, _variant),
            last=_last,
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
            "scripts/train_kd.py"


rule summarize_kd:
    input:
        lambda wc: [
            f"{R}/{ds}/{config['kd']['variants'][v]['student']}/kd/{v}/s{s}/run.json"
            for ds, v in KD_VARIANTS
            if ds == wc.dataset
            for s in KD_SEEDS
        ],
    output:
        f"{R}/{{dataset}}/kd.csv",
    log:
        f"{R}/{{dataset}}/kd.log",
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/summarize.py"
