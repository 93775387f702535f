# Config validation (before any job starts), wildcard constraints and input functions.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # the reuse package of this checkout

from reuse.config import checkpoint_epochs, expose_checkout, recipe_for, runs, validate_config

expose_checkout(workflow.basedir)
from reuse.errors import ConfigError

try:
    validate_config(config, Path(workflow.basedir) / "rules" / "schemas" / "config.schema.yaml",
                    source="the workflow config")
except ConfigError as e:
    raise WorkflowError(f"{e}\nFix the config (config.yaml or the --configfile you passed) and run again.") from None

R = config["results"].rstrip("/")
RUNS = list(runs(config))
SEEDS = config["baseline"]["seeds"]


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    model="|".join(config["models"]),
    method="baseline",
    seed=r"\d+",
    epoch=r"\d+",


def data_files(dataset):
    return {"npz": f"{R}/{dataset}/data/data.npz", "meta": f"{R}/{dataset}/data/dataset.json"}


def run_dir(dataset, model, method="baseline", seed="{seed}"):
    return f"{R}/{dataset}/{model}/{method}/s{seed}"


def cache_files(prefix):
    """The files of one logit cache folder, as the cache config asks."""
    c = config["cache"]
    names = (["logits.npy"] if c["dense"] else []) + (
        ["topk_values.npy", "topk_indices.npy", "logsumexp.npy"] if c["topk"] else []
    )
    return [f"{prefix}/{n}" for n in names] + [f"{prefix}/meta.json"]


def baseline_targets():
    out = []
    for ds, model in RUNS:
        for seed in SEEDS:
            d = run_dir(ds, model, seed=seed)
            out += [f"{d}/metrics.jsonl", f"{d}/run.json", f"{d}/predictions.npz"]
            for e in checkpoint_epochs(config, model):
                out += [f"{d}/ckpt/e{e}.pt"] + cache_files(f"{d}/logits/e{e}")
    return out
