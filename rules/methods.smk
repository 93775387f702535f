# Every registered method's runs (reuse.methods.registry): one rule per (method, dataset, variant),
# one job per seed, each writing the standard run files into
# results/<dataset>/<model>/<method>/<variant>/s<seed>/; the method's stage trains it
# (reuse/methods/<name>/stage.py) from the files the method says a run reads, as staged inputs.
# Then one run table per (dataset, method) and the studies the methods declare.

for _m, _ds, _variant in VARIANTS:
    _dir = f"{R}/{_m.run_dir(config, _ds, _variant)}"
    _key, _ckpt = _m.final_checkpoint(config, _variant)

    rule:
        name:
            f"{_m.name}__{_ds}__{_variant}"
        input:
            unpack(lambda wc, m=_m, ds=_ds, v=_variant: {
                **data_files(ds), **under_results(m.inputs(config, ds, v, int(wc.seed)))}),
        output:
            ckpts=[f"{_dir}/ckpt/{_ckpt}"],
            metrics=f"{_dir}/metrics.jsonl",
            run=f"{_dir}/run.json",
            predictions=f"{_dir}/predictions.npz",
            example_stats=[f"{_dir}/example_stats.npz"] if _m.example_stats(config, _variant) else [],
            extra=[f"{_dir}/{f}" for f in _m.extra_outputs(config, _variant)],
        params:
            stage=_m.stage,
            method=_m.name,
            variant=_variant,
            cfg=_m.variant(config, _variant),
            model=_m.model(config, _variant),
            model_cfg=config["models"][_m.model(config, _variant)],
            recipe=_m.recipe(config, _variant),
            extra=_m.params(config, _ds, _variant),
            ckpt_key=_key,
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
            TRAIN_SCRIPT


rule summarize_method:
    input:
        lambda wc: method_run_files(wc.dataset, wc.method),
    output:
        f"{R}/{{dataset}}/{{method}}.csv",
    log:
        f"{R}/{{dataset}}/{{method}}.log",
    wildcard_constraints:
        method="|".join(m.name for m in METHODS) or "(?!)",
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/summarize.py"


rule study:
    input:
        unpack(lambda wc: study_inputs(wc.dataset, wc.study)),
    output:
        f"{R}/{{dataset}}/studies/{{study}}.csv",
    params:
        build=lambda wc: STUDIES[wc.study].build,
        params=lambda wc: STUDIES[wc.study].params(config) if STUDIES[wc.study].params else {},
    log:
        f"{R}/{{dataset}}/studies/{{study}}.log",
    wildcard_constraints:
        study="|".join(STUDIES) or "(?!)",
    conda:
        "../envs/reuse.yaml"
    script:
        "scripts/study.py"
