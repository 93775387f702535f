from pathlib import Path

from reuse.workflow import run_rule, score_run

run_rule(snakemake, lambda sm: score_run(
    data_dir=str(Path(sm.input.npz).parent), run_dir=str(Path(sm.input.run).parent), epochs=list(sm.params.epochs),
    names=list(sm.params.names), batch_size=sm.params.batch_size, device=sm.params.device,
    out_npz=sm.output.npz, out_json=sm.output.json))
