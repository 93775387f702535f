# Per-example difficulty scores from past runs (reuse.scores): each scored baseline run at each scored
# checkpoint epoch, then one averaged table per dataset and the study of how stable the scores are.

if SCORE_MODEL is not None:

    rule score_run:
        input:
            **data_files("{dataset}"),
            ckpts=[f"{run_dir('{dataset}', SCORE_MODEL)}/ckpt/e{e}.pt" for e in score_epochs(config)],
            run=f"{run_dir('{dataset}', SCORE_MODEL)}/run.json",
            example_stats=(
                [f"{run_dir('{dataset}', SCORE_MODEL)}/example_stats.npz"]
                if "forgetting" in config["scores"]["names"]
                else []
            ),
        output:
            npz=f"{run_dir('{dataset}', SCORE_MODEL)}/scores.npz",
            json=f"{run_dir('{dataset}', SCORE_MODEL)}/scores.json",
        params:
            epochs=score_epochs(config),
            names=config["scores"]["names"],
            batch_size=config["scores"]["batch_size"],
            device=config["device"],
        log:
            f"{run_dir('{dataset}', SCORE_MODEL)}/scores.log",
        threads: config["threads_per_job"]
        resources:
            gpu=GPUS,
        conda:
            "../envs/reuse.yaml"
        script:
            "scripts/score_run.py"

    rule score_table:
        input:
            lambda wc: scored_run_files(wc.dataset),
        output:
            parquet=f"{R}/{{dataset}}/scores.parquet",
            json=f"{R}/{{dataset}}/scores.json",
        log:
            f"{R}/{{dataset}}/scores.log",
        conda:
            "../envs/reuse.yaml"
        script:
            "scripts/score_table.py"

    rule score_agreement:
        input:
            lambda wc: [f for f in scored_run_files(wc.dataset) if f.endswith(".npz")],
        output:
            f"{R}/{{dataset}}/studies/score_agreement.csv",
        log:
            f"{R}/{{dataset}}/studies/score_agreement.log",
        conda:
            "../envs/reuse.yaml"
        script:
            "scripts/score_agreement.py"
