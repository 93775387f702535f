# Config validation (before any job starts), wildcard constraints and input functions.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # the reuse package of this checkout

from reuse.config import (
    DATA_METHODS,
    checkpoint_epochs,
    expose_checkout,
    kd_recipe,
    kd_seeds,
    kd_teacher_epochs,
    kd_teacher_seeds,
    kd_variants,
    method_seeds,
    method_variants,
    needs_scores,
    recipe_for,
    runs,
    score_datasets,
    score_epochs,
    score_seeds,
    validate_config,
    variant_score_epoch,
)

expose_checkout(workflow.basedir)
from reuse.errors import ConfigError

try:
    validate_config(config, Path(workflow.basedir) / "rules" / "schemas" / "config.schema.yaml",
                    source="the workflow config")
except ConfigError as e:
    raise WorkflowError(f"{e}\nFix the config (config.yaml or the --configfile you passed) and run again.") from None

R = config["results"].rstrip("/")
GPUS = config["gpus_per_job"]  # the `gpu` resource of every job that runs a model (SLURM: --gpus)
RUNS = list(runs(config))
SEEDS = config["baseline"]["seeds"]
KD_VARIANTS = list(kd_variants(config))
KD_SEEDS = kd_seeds(config)
SCORE_MODEL = config["scores"]["model"]
SCORE_DATASETS = score_datasets(config)
METHOD_VARIANTS = {m: list(method_variants(config, m)) for m in DATA_METHODS}

from reuse.methods.adversarial.plan import (
    adv_cache_epoch,
    adv_cache_seeds,
    adv_robust_models,
    adv_seeds,
    adv_variants,
)

ADV_VARIANTS = list(adv_variants(config))
ADV_SEEDS = adv_seeds(config)


def adv_cache_runs(ds, cache):
    """The folders of the baseline runs a cache attacks."""
    model = config["adv"]["caches"][cache]["source"]["model"]
    return [run_dir(ds, model, seed=s) for s in adv_cache_seeds(config, cache)]


def adv_run_dirs(ds):
    """The folders of a dataset's adversarial runs (every variant x seed)."""
    return [f"{R}/{d}/{config['adv']['variants'][v]['model']}/adv/{v}/s{s}" for d, v in ADV_VARIANTS if d == ds
            for s in ADV_SEEDS]


def robust_checkpoint(ds, model, kind, seed):
    """The final checkpoint of a run whose robust accuracy is measured."""
    if kind == "baseline":
        return f"{run_dir(ds, model, seed=seed)}/ckpt/e{checkpoint_epochs(config, model)[-1]}.pt"
    return f"{R}/{ds}/{model}/{kind}/s{seed}/ckpt/last.pt"


def adv_robust_files(ds):
    """robust.json of every adversarial run and of every baseline run of the variants' models."""
    base = [f"{run_dir(d, m, seed=s)}/robust.json" for d, m in adv_robust_models(config) if d == ds
            for s in SEEDS]
    return base + [f"{d}/robust.json" for d in adv_run_dirs(ds)]


def adv_targets():
    """Per dataset with adversarial variants: the run table, the study and every robust.json."""
    out = []
    for ds in dict.fromkeys(ds for ds, _ in ADV_VARIANTS):
        out += [f"{R}/{ds}/adv.csv", f"{R}/{ds}/studies/adv.csv"] + adv_robust_files(ds)
    return out


from reuse.config import WEIGHTS_METHODS, soup_ingredient_seeds, warm_recipe, warm_source, weights_variants

WEIGHTS_VARIANTS = {m: list(weights_variants(config, m)) for m in WEIGHTS_METHODS}


def weights_run_files(ds, method):
    """The run.json of every run of a weights method (warm, soup, averaging) on ``ds``."""
    return [f"{method_dir(d, method, v, s)}/run.json" for d, v in WEIGHTS_VARIANTS[method] if d == ds
            for s in method_seeds(config, method)]


def weights_summary_targets():
    """Per dataset with any warm start, soup or averaging run: each method's run table and the study."""
    out = []
    for ds in config["datasets"]:
        methods = [m for m in WEIGHTS_METHODS if any(d == ds for d, _ in WEIGHTS_VARIANTS[m])]
        out += [f"{R}/{ds}/{m}.csv" for m in methods] + ([f"{R}/{ds}/studies/warm.csv"] if methods else [])
    return out


def warm_past_run(ds, variant, seed):
    """The folder of the past run that the warm start of ``seed`` starts from, and its checkpoint."""
    src = warm_source(config, variant, int(seed))
    return {"run": f"{R}/{ds}/{src['run']}", "ckpt": f"{R}/{ds}/{src['run']}/ckpt/{src['ckpt']}"}


def soup_ingredient_runs(ds, variant, seed):
    """The folders of the warm runs averaged into the soup of ``seed``."""
    ing = config["soup"]["variants"][variant]["ingredients"]
    return [method_dir(ds, "warm", ing["variant"], s) for s in soup_ingredient_seeds(config, variant, int(seed))]


def weights_inputs(method, ds, variant, seed):
    """The files a run of a weights method reads besides the data: the past checkpoint and run.json."""
    if method == "warm":
        past = warm_past_run(ds, variant, seed)
        return [past["ckpt"], f"{past['run']}/run.json"]
    if method == "soup":
        return [f"{r}/{name}" for r in soup_ingredient_runs(ds, variant, seed) for name in ("ckpt/last.pt", "run.json")]
    return []


def weights_past(method, ds, variant, seed):
    """What a run reads besides the data: a warm start's past run ({run, ckpt}), a soup's ingredient
    run folders; nothing for weight averaging."""
    if method == "warm":
        return warm_past_run(ds, variant, seed)
    return soup_ingredient_runs(ds, variant, seed) if method == "soup" else None


def weights_recipe(method, variant):
    """A weights-method run's recipe: a warm start's (with its overrides), else its model's."""
    v = config[method]["variants"][variant]
    return warm_recipe(config, variant) if method == "warm" else recipe_for(config, v["model"])


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    model="|".join(config["models"]),
    method="|".join(("baseline", "kd") + DATA_METHODS + ("adv", "warm", "soup", "averaging")),
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


def summary_targets():
    """Per dataset: the baseline table; the KD table when the config distils on it; the score table
    and its rank-agreement study; each data method's run table and study table."""
    out = [f"{R}/{ds}/baselines.csv" for ds in dict.fromkeys(ds for ds, _ in RUNS)]
    out += [f"{R}/{ds}/kd.csv" for ds in dict.fromkeys(ds for ds, _ in KD_VARIANTS)]
    out += [f for ds in SCORE_DATASETS for f in (f"{R}/{ds}/scores.parquet", f"{R}/{ds}/studies/score_agreement.csv")]
    for method, pairs in METHOD_VARIANTS.items():
        for ds in dict.fromkeys(ds for ds, _ in pairs):
            out += [f"{R}/{ds}/{method}.csv", f"{R}/{ds}/studies/{method}.csv"]
    return out + weights_summary_targets()


def kd_teacher_runs(ds, variant, seed):
    """The folders of the baseline runs that teach the student of ``seed``."""
    model = config["kd"]["variants"][variant]["teacher"]["model"]
    return [run_dir(ds, model, seed=s) for s in kd_teacher_seeds(config, variant, int(seed))]


def kd_teacher_inputs(ds, variant, seed):
    v = config["kd"]["variants"][variant]
    runs = kd_teacher_runs(ds, variant, seed)
    epochs = kd_teacher_epochs(config, variant)
    files = [f"{r}/run.json" for r in runs]
    if v["online"]:
        return files + [f"{r}/ckpt/e{e}.pt" for r in runs for e in epochs]
    return files + [f for r in runs for e in epochs for f in cache_files(f"{r}/logits/e{e}")]


def scored_run_files(ds):
    """The per-run score files that make up a dataset's score table."""
    return [f"{run_dir(ds, SCORE_MODEL, seed=s)}/scores.{ext}" for s in score_seeds(config) for ext in ("npz", "json")]


def method_dir(ds, method, variant, seed="{seed}"):
    model = config[method]["variants"][variant]["model"]
    return f"{R}/{ds}/{model}/{method}/{variant}/s{seed}"


def method_run_files(ds, method):
    return [f"{method_dir(d, method, v, s)}/run.json" for d, v in METHOD_VARIANTS[method] if d == ds
            for s in method_seeds(config, method)]


def report_targets():
    """The report's outputs (reuse.report.expected_outputs): the summary table, the pages, the key
    figures by kind; paths under the results folder."""
    from reuse.report import expected_outputs

    out = expected_outputs(config)
    return {"summary": [f"{R}/{f}" for f in out["summary"]], "pages": [f"{R}/{f}" for f in out["pages"]],
            "tables": [f"{R}/{f}" for f in out["tables"]],
            "figures": {k: [f"{R}/{f}" for f in v] for k, v in out["figures"].items()}}


def report_inputs():
    """Everything the report reads: each expected run's run.json, metrics and test predictions, and the
    per-dataset tables (score tables, studies)."""
    from reuse.config import expected_runs

    files = [f"{R}/{e['relpath']}/{name}" for e in expected_runs(config)
             for name in ("run.json", "metrics.jsonl", "predictions.npz")]
    return files + summary_targets()
