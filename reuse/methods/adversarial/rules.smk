# The adversarial method's own stages (reuse.methods.adversarial; included by the Snakefile for the
# registered method): adversarial examples generated once against past baseline runs (one cache per
# dataset x cache), and the robust accuracy of every adversarial run and of the baseline runs of the
# same models. Its runs and its study come from the generic rules (rules/methods.smk).

_ADV = method("adv")


rule adv_cache:
    input:
        unpack(lambda wc: {**data_files(wc.dataset), **under_results(_ADV.cache_inputs(config, wc.dataset, wc.cache))}),
    output:
        npz=f"{R}/{{dataset}}/adv/{{cache}}/adv.npz",
        meta=f"{R}/{{dataset}}/adv/{{cache}}/meta.json",
    params:
        stage="reuse.methods.adversarial.stage:cache_rule",
        attack=lambda wc: config["adv"]["caches"][wc.cache]["attack"],
        device=config["device"],
    log:
        f"{R}/{{dataset}}/adv/{{cache}}/adv_cache.log",
    wildcard_constraints:
        cache="|".join(config["adv"]["caches"]) or "(?!)",
    threads: config["threads_per_job"]
    resources:
        gpu=GPUS,
    conda:
        "../../../envs/reuse.yaml"
    script:
        STAGE_SCRIPT


rule robust_eval:
    input:
        unpack(lambda wc: data_files(wc.dataset)),
        ckpt=lambda wc: f"{R}/{_ADV.robust_checkpoint(config, wc.dataset, wc.model, wc.kind, wc.seed)}",
        run=f"{R}/{{dataset}}/{{model}}/{{kind}}/s{{seed}}/run.json",
    output:
        f"{R}/{{dataset}}/{{model}}/{{kind}}/s{{seed}}/robust.json",
    params:
        stage="reuse.methods.adversarial.stage:robust_rule",
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
        "../../../envs/reuse.yaml"
    script:
        STAGE_SCRIPT
