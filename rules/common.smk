# Config validation (before any job starts), wildcard constraints and input functions. Nothing here
# names a method: the registered methods (reuse.methods.registry) say what runs they declare and
# what each run reads. Starting Snakemake imports no torch.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)  # the reuse package of this checkout

from reuse.config import validate_config
from reuse.errors import ConfigError
from reuse.methods import registry
from reuse.scheduling import lighten_scheduler
from reuse.plan import (
    BASELINE,
    baseline_seeds,
    budget_run_recipe,
    budget_runs,
    budget_variants,
    cache_files as _cache_files,
    checkpoint_epochs,
    expose_checkout,
    is_tree,
    recipe_for,
    run_path,
    runs,
    score_datasets,
    score_epochs,
    score_seeds,
)

expose_checkout(workflow.basedir)

try:
    validate_config(config, Path(workflow.basedir) / "rules" / "schemas" / "config.schema.yaml",
                    source="the workflow config")
except ConfigError as e:
    raise WorkflowError(f"{e}\nFix the config (config.yaml or the --configfile you passed) and run again.") from None

R = config["results"].rstrip("/")
GPUS = config["gpus_per_job"]  # the `gpu` resource of every job that runs a model (SLURM: --gpus)
RUNS = list(runs(config))
SEEDS = baseline_seeds(config)
# the baseline's budget curve: its runs by name (b0.5: 0.5, ...; budget 1 is the baseline run itself),
# and the (dataset, model) pairs that have one (tree models have none)
BUDGETS = budget_variants(config)
BUDGET_RUNS = list(budget_runs(config))
SCORE_MODEL = config["scores"]["model"]
SCORE_DATASETS = score_datasets(config)
METHODS = registry.methods(config)
STUDIES = registry.studies(config)
# (method, dataset, variant) of every registered method's variants
VARIANTS = [(m, ds, v) for m in METHODS for ds, v in m.variants(config)]
# the rule scripts that call a stage by name (params.stage) or a registered method's stage
STAGE_SCRIPT = str(Path(workflow.basedir) / "rules" / "scripts" / "stage.py")
TRAIN_SCRIPT = str(Path(workflow.basedir) / "rules" / "scripts" / "train_method.py")


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    model="|".join(config["models"]),
    method="|".join(["baseline"] + [m.name for m in METHODS]),
    seed=r"\d+",
    epoch=r"\d+",


def method(name):
    """The registered method ``name``."""
    return registry.get(name, config)


def under_results(files):
    """Paths relative to the results folder (a list, or a dict of lists) as workflow paths."""
    if isinstance(files, dict):
        return {k: [f"{R}/{f}" for f in v] for k, v in files.items()}
    return [f"{R}/{f}" for f in files]


def data_files(dataset):
    return {"npz": f"{R}/{dataset}/data/data.npz", "meta": f"{R}/{dataset}/data/dataset.json"}


def run_dir(dataset, model, seed="{seed}"):
    """A baseline run's folder."""
    return f"{R}/{run_path(dataset, model, seed=seed)}"


def budget_dir(dataset, model, budget="{budget}", seed="{seed}"):
    """The folder of a baseline run of the budget curve (``budget``: its name, e.g. b0.5)."""
    return f"{R}/{run_path(dataset, model, BASELINE, budget, seed)}"


def budget_files(folder):
    """The files a run of the budget curve writes (its final checkpoint; no caches, no example_stats)."""
    return {"ckpts": [f"{folder}/ckpt/last.pt"], "metrics": f"{folder}/metrics.jsonl", "run": f"{folder}/run.json",
            "predictions": f"{folder}/predictions.npz"}


def cache_files(prefix):
    """The files of one logit cache folder, as the cache config asks."""
    return _cache_files(config, prefix)


def baseline_targets():
    out = []
    for ds, model in RUNS:
        for seed in SEEDS:
            d = run_dir(ds, model, seed=seed)
            out += [f"{d}/metrics.jsonl", f"{d}/run.json", f"{d}/predictions.npz"]
            for e in checkpoint_epochs(config, model):
                ckpt = f"{d}/ckpt/e{e}.txt" if is_tree(config, model) else f"{d}/ckpt/e{e}.pt"  # trees: LightGBM text
                out += [ckpt] + cache_files(f"{d}/logits/e{e}")
    for ds, model in BUDGET_RUNS:
        for name in BUDGETS:
            for seed in SEEDS:
                f = budget_files(budget_dir(ds, model, name, seed))
                out += f["ckpts"] + [f["metrics"], f["run"], f["predictions"]]
    return out


def method_run_files(ds, name):
    """The run.json of every run of the registered method ``name`` on ``ds``."""
    m = method(name)
    return [f"{R}/{m.run_dir(config, d, v, s)}/run.json" for d, v in m.variants(config) if d == ds
            for s in m.seeds(config, v)]


# the datasets each method has runs on (planned once: input functions look them up per job)
_METHOD_DATASETS = {m.name: list(dict.fromkeys(ds for mm, ds, _ in VARIANTS if mm is m)) for m in METHODS}


def method_datasets(m):
    """The datasets a method has runs on."""
    return _METHOD_DATASETS[m.name]


def study_datasets(study):
    out = list(dict.fromkeys(ds for m in METHODS if m.name in study.methods for ds in method_datasets(m)))
    if study.datasets is not None:  # a study built on some of them only (e.g. one across datasets)
        keep = set(study.datasets(config))
        out = [ds for ds in out if ds in keep]
    return out


def study_inputs(ds, name):
    """A study's inputs: the run tables of its methods that have runs on ``ds``, the baselines, and
    what else it reads."""
    s = STUDIES[name]
    tables = [f"{R}/{ds}/{m.name}.csv" for m in METHODS if m.name in s.methods and ds in method_datasets(m)]
    return {"runs": tables, "baselines": f"{R}/{ds}/baselines.csv",
            **under_results(s.extra(config, ds) if s.extra else {})}


def summary_targets():
    """Per dataset: the baseline table; the score table and its rank-agreement study; each method's
    run table and its studies."""
    out = [f"{R}/{ds}/baselines.csv" for ds in dict.fromkeys(ds for ds, _ in RUNS)]
    out += [f for ds in SCORE_DATASETS for f in (f"{R}/{ds}/scores.parquet", f"{R}/{ds}/studies/score_agreement.csv")]
    for m in METHODS:
        out += [f"{R}/{ds}/{m.name}.csv" for ds in method_datasets(m)]
    for name, s in STUDIES.items():
        out += [f"{R}/{ds}/studies/{name}.csv" for ds in study_datasets(s)]
    return out


def method_targets():
    """The further files each method's report rows need (e.g. robust accuracies)."""
    return [f"{R}/{f}" for m in METHODS for ds in method_datasets(m) for f in m.targets(config, ds)]


def scored_run_files(ds):
    """The per-run score files that make up a dataset's score table."""
    return [f"{run_dir(ds, SCORE_MODEL, seed=s)}/scores.{ext}" for s in score_seeds(config) for ext in ("npz", "json")]


def report_targets():
    """The report's outputs (reuse.report.layout.expected_outputs): the summary table, the pages, the
    key figures by kind; paths under the results folder."""
    from reuse.report.layout import expected_outputs

    out = expected_outputs(config)
    return {"summary": [f"{R}/{f}" for f in out["summary"]], "pages": [f"{R}/{f}" for f in out["pages"]],
            "tables": [f"{R}/{f}" for f in out["tables"]],
            "figures": {k: [f"{R}/{f}" for f in v] for k, v in out["figures"].items()}}


def report_inputs():
    """Everything the report reads: each expected run's run.json, metrics and test predictions, the
    per-dataset tables (score tables, studies) and each method's further files."""
    files = [f"{R}/{e['relpath']}/{name}" for e in registry.expected_runs(config)
             for name in ("run.json", "metrics.jsonl", "predictions.npz")]
    return files + summary_targets() + method_targets()


# Snakemake's own scheduling rounds made lighter (reuse/scheduling.py says how and why).
lighten_scheduler()
