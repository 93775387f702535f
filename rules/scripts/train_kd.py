from pathlib import Path

from reuse.workflow import run_rule, train_kd

run_rule(snakemake, lambda sm: train_kd(
    data_dir=str(Path(sm.input.npz).parent), variant=sm.params.variant, cfg=dict(sm.params.cfg),
    student=sm.params.student, student_cfg=dict(sm.params.student_cfg), recipe=dict(sm.params.recipe),
    seed=int(sm.wildcards.seed), teacher_runs=list(sm.params.teacher_runs), teacher_epochs=list(sm.params.teacher_epochs),
    device=sm.params.device, progress=sm.params.progress,
    outputs={"ckpts": {sm.params.last: sm.output.ckpts[0]}, "metrics": sm.output.metrics, "run": sm.output.run,
             "predictions": sm.output.predictions}))
