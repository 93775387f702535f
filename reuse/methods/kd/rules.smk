# kd's own stage (reuse.methods.kd; included by the Snakefile for the registered method): the logit
# cache of a method run's final checkpoint, for the kd variants whose teacher names a method's runs
# (`teacher: {model, method, variant}`) rather than baseline runs. One rule per (dataset, method,
# variant) taught from, one job per seed, writing <run>/logits/final/ with the script and stage of the
# baseline caches (reuse.workflow.logit_cache).

for _ds, _tm, _tv in method("kd").method_teachers(config):
    _past = method(_tm)
    _run = f"{R}/{_past.run_dir(config, _ds, _tv)}"

    rule:
        name:
            f"kd_teacher_cache__{_ds}__{_tm}__{_tv}"
        input:
            **data_files(_ds),
            ckpts=[f"{_run}/ckpt/{_past.final_checkpoint(config, _tv)[1]}"],
        output:
            cache_files(f"{_run}/logits/final"),
        params:
            cache=config["cache"],
            device=config["device"],
        log:
            f"{_run}/logits/final.log",
        threads: config["threads_per_job"]
        resources:
            gpu=GPUS,
        conda:
            "../../../envs/reuse.yaml"
        script:
            str(Path(workflow.basedir) / "rules" / "scripts" / "logit_cache.py")
