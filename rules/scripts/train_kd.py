from pathlib import Path

from reuse.workflow import run_rule, train_kd

# The teachers' folders as Snakemake staged them (their run.json inputs, in the order of
# params.teacher_runs), not params.teacher_runs itself: with a storage provider (--default-storage-provider
# s3) the inputs are local copies elsewhere, and only the input paths point at them.
def teacher_dirs(sm) -> list[str]:
    return [str(Path(f).parent) for f in sm.input.teachers if Path(f).name == "run.json"]

run_rule(snakemake, lambda sm: train_kd(
    data_dir=str(Path(sm.input.npz).parent), variant=sm.params.variant, cfg=dict(sm.params.cfg),
    student=sm.params.student, student_cfg=dict(sm.params.student_cfg), recipe=dict(sm.params.recipe),
    seed=int(sm.wildcards.seed), teacher_runs=teacher_dirs(sm), teacher_epochs=list(sm.params.teacher_epochs),
    device=sm.params.device, progress=sm.params.progress,
    outputs={"ckpts": {sm.params.last: sm.output.ckpts[0]}, "metrics": sm.output.metrics, "run": sm.output.run,
             "predictions": sm.output.predictions}))
