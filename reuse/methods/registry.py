"""The method registry: every reuse method is a :class:`Method` registered by name.

A method is one folder ``reuse/methods/<name>/`` (Composer's ``algorithms/`` shape). Its ``spec.py``
subclasses :class:`Method` and calls :func:`register`; the spec says what the method's config block
may hold (``schema.yaml`` beside it), what is wrong with a config (:meth:`Method.problems`), which runs
it declares, the files each run reads, the stage that trains a run and the study tables. The config
validator, the run list, the workflow's generic rules (``rules/methods.smk``) and the report loop over
:func:`methods`; none of them names a method.

The built-in methods are the modules in :data:`BUILTIN`: adding a method is its folder plus one line
there. A method defined elsewhere (a user's package, a test) is loaded by naming its module in the
config's ``plugins`` list; importing the module registers it.

Specs import no torch: the config check and every Snakemake start (locally and in each SLURM job)
plan the whole benchmark from the specs alone. Stages are named as ``"module:function"`` strings and
imported only in the job that runs them.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from reuse.errors import ConfigError
from reuse.plan import (BASELINE, baseline_seeds, block_seeds, budget_runs, budget_variants, datasets_of, deep_merge,
                        no_model, recipe_for, run_path, runs, trains_on, variant_budget)

#: the key, on a variant of any method with ``variants``, that names the model whose baseline runs are
#: the variant's like-for-like comparator (default: the variant's own model)
COMPARATOR = "baseline"

# The built-in methods, in the order the docs and the report list them: one line per method.
BUILTIN = (
    "reuse.methods.kd.spec",
    "reuse.methods.prune.spec",
    "reuse.methods.curriculum.spec",
    "reuse.methods.reweight.spec",
    "reuse.methods.adversarial.spec",
    "reuse.methods.weights.spec",
    "reuse.methods.bias.spec",
    "reuse.methods.sequences.spec",
    "reuse.methods.transfer.spec",
    "reuse.methods.interleave.spec",
    "reuse.methods.specialists.spec",
)

_REGISTRY: dict[str, "Method"] = {}
_LOADED: set[str] = set()


@dataclass(frozen=True)
class Study:
    """A per-dataset study table, ``<results>/<dataset>/studies/<name>.csv``.

    ``methods``: the methods whose run tables (``<results>/<dataset>/<method>.csv``) it reads (those
    with runs on the dataset); ``build``: ``"module:function"`` called in the job as
    ``fn(runs_csvs=[...], baseline_csv=..., extra={name: [paths]}, params={...}, out_csv=...)``;
    ``extra``: more files it reads, ``fn(config, dataset) -> {name: [paths relative to results]}``;
    ``params``: ``fn(config) -> dict`` of settings it needs; ``charts``: ``"module:function"`` called by
    the report as ``fn(table) -> [(title, altair chart, caption), ...]`` with the study's rows, drawn
    under the table on the method's page (imported only when the report is built); ``datasets``:
    ``fn(config) -> [dataset, ...]``, the datasets it is built on, of those its methods have runs on
    (default: all of them; a study across datasets names one, and reads the others through ``extra``).
    """

    name: str
    methods: tuple[str, ...]
    build: str
    extra: Callable[[dict, str], dict[str, list[str]]] | None = None
    params: Callable[[dict], dict] | None = None
    charts: str | None = None
    datasets: Callable[[dict], list[str]] | None = None


class Method:
    """The spec of one reuse method: its config block ``config[name]`` of ``seeds`` and ``variants``.

    Subclasses set the class attributes and override the hooks whose default does not fit. Every
    path a hook returns is relative to the results folder. Hooks take the validated config.
    """

    #: the config block, the ``method`` of its run.json and the path segment of its runs
    name: str = ""
    #: one line for the docs and the report
    title: str = ""
    #: ``"module:function"``: trains one run; called as ``fn(job)`` with a :class:`reuse.workflow.Job`
    stage: str = ""
    #: the method's schema fragment and card, relative to the folder of the spec's module
    schema_file: str | None = "schema.yaml"
    card_file: str | None = "README.md"
    #: a Snakemake file of the method's own stages (e.g. a cache built once), relative to the folder
    rules_file: str | None = None
    #: the studies the method contributes to (several methods may share one, by name)
    studies: tuple[Study, ...] = ()

    # -- identity and files
    @property
    def folder(self) -> Path:
        return Path(sys.modules[type(self).__module__].__file__).parent

    @property
    def card(self) -> Path | None:
        return self.folder / self.card_file if self.card_file else None

    @property
    def rules(self) -> Path | None:
        return self.folder / self.rules_file if self.rules_file else None

    def schema(self) -> dict:
        """The fragment: ``properties`` (top-level config blocks: this method's, and those of the other
        methods that share the file) and ``$defs`` (named subschemas, each starting with a method's
        name)."""
        return yaml.safe_load((self.folder / self.schema_file).read_text()) if self.schema_file else {}

    # -- what a variant is
    def block(self, config: dict) -> dict:
        return config.get(self.name) or {}

    def variant(self, config: dict, name: str) -> dict:
        return self.block(config)["variants"][name]

    def model(self, config: dict, name: str) -> str:
        """The model a variant trains (the run's ``model``)."""
        return self.variant(config, name)["model"]

    def needs_models(self, config: dict, name: str) -> list[str]:
        """Models that must train on a dataset for the variant to run there."""
        return [self.model(config, name)]

    def variants(self, config: dict) -> Iterator[tuple[str, str]]:
        """Every (dataset, variant) pair the method trains runs of."""
        for name, v in self.block(config).get("variants", {}).items():
            if any(m not in config["models"] for m in self.needs_models(config, name)):
                continue
            for ds in datasets_of(config, v, *self.needs_models(config, name)):
                yield ds, name

    def seeds(self, config: dict, variant: str | None = None) -> list[int]:
        """The seeds of the method's runs; of ``variant``'s runs where given (a method whose variants
        differ in their seeds overrides this: every seed list the workflow plans comes from it)."""
        return block_seeds(config, self.name)

    def recipe(self, config: dict, name: str) -> dict:
        """The recipe a variant's runs start from: the model's, with the variant's ``train`` over it."""
        return deep_merge(recipe_for(config, self.model(config, name)), self.variant(config, name).get("train") or {})

    def budget(self, config: dict, name: str) -> float:
        """A run's budget, in multiples of its model's recipe epochs (run.json's ``budget``): the report
        compares it with the baseline trained at the same budget (``baseline.budgets``). By default the
        variant's ``budget`` where the method has one, else its ``train.epochs`` over the model's recipe
        epochs, else 1 (:func:`reuse.plan.variant_budget`)."""
        return variant_budget(config, self.model(config, name), self.variant(config, name))

    def comparator(self, config: dict, name: str) -> str:
        """The model whose baseline runs a variant is judged against: its ``baseline`` key, else its own
        model."""
        v = self.variant(config, name)
        return (v.get(COMPARATOR) if isinstance(v, dict) else None) or self.model(config, name)

    def final_checkpoint(self, config: dict, name: str) -> tuple[str | int, str]:
        """The key (an epoch or ``last``) and file name under ``ckpt/`` of a run's kept checkpoint."""
        return "last", "last.pt"

    def extra_outputs(self, config: dict, name: str) -> list[str]:
        """Files a run writes besides the standard ones, relative to its folder (e.g. a logit cache of
        its final model that later runs of a sequence read); the stage writes them in ``fit``'s
        ``finish`` (``job.outputs["extra"]``, in this order)."""
        return []

    def example_stats(self, config: dict, name: str) -> bool:
        """Whether a run writes example_stats.npz (per-epoch per-example correctness and loss)."""
        return bool(self.recipe(config, name)["example_stats"])

    # -- capabilities, read by checks elsewhere instead of method names
    #: whether a run's test accuracy is one of the dataset's whole task, comparable with the baseline's
    #: and on the report's frontier (false: interleaving's task-aware accuracies, the source-task
    #: accuracy of source runs made to be transferred)
    on_frontier: bool = True
    #: whether a run's final checkpoint is one model of its architecture that a method starting from
    #: past weights can load (false: an interleaved run's shared encoder and its task heads)
    plain_checkpoint: bool = True

    #: what to do about a variant that changes inputs on data whose inputs cannot change (token ids)
    input_fix: str = "list non-text `datasets` for it"

    def perturbs_inputs(self, config: dict, name: str) -> tuple[str, str] | None:
        """Whether the variant changes its inputs (mixes, perturbs them): None, or the key that makes
        it do so (relative to the variant, "" for the variant itself) and what it does, e.g.
        ``("mixup", "input MixUp mixes inputs")``."""
        return None

    def cached_models(self, config: dict, name: str) -> list[str]:
        """Models of ``needs_models`` the variant reads only through their logit caches (so they may be
        gradient-boosted trees, :mod:`reuse.models.gbdt`, which have no network checkpoint)."""
        return []

    # -- checks
    def problems(self, config: dict) -> list[str]:
        """The block's semantic problems (the schema checks shapes), each naming the key path and the fix."""
        problems = []
        for name in self.block(config).get("variants", {}):
            for model in self.needs_models(config, name):
                if model not in config["models"]:
                    problems.append(no_model(f"{self.name}.variants.{name}.model", model, config))
        return problems

    # -- the workflow
    def run_dir(self, config: dict, dataset: str, name: str, seed: int | str = "{seed}") -> str:
        return run_path(dataset, self.model(config, name), self.name, name, seed)

    def inputs(self, config: dict, dataset: str, name: str, seed: int) -> dict[str, list[str]]:
        """The files one run reads besides the prepared data, by input name (staged by Snakemake)."""
        return {}

    def params(self, config: dict, dataset: str, name: str) -> dict[str, Any]:
        """Settings of a variant's runs that the stage needs beyond the variant's own block."""
        return {}

    def targets(self, config: dict, dataset: str) -> list[str]:
        """Further files the report waits for on ``dataset`` (beyond runs, run tables and studies)."""
        return []


def register(method: Method) -> Method:
    """Add ``method`` to the registry (once per name)."""
    if not method.name or not method.name.isidentifier():
        raise ValueError(f"{type(method).__name__}: a method's name must be an identifier, not {method.name!r}")
    if method.name in _REGISTRY and type(_REGISTRY[method.name]) is not type(method):
        raise ValueError(f"method '{method.name}' registered twice ({type(_REGISTRY[method.name]).__name__} and "
                         f"{type(method).__name__})")
    _REGISTRY[method.name] = method
    return method


def load(modules: tuple[str, ...] | list[str] = ()) -> None:
    """Import the built-in specs and the plugin ``modules`` (each registers its methods)."""
    for mod in (*BUILTIN, *modules):
        if mod in _LOADED:
            continue
        try:
            importlib.import_module(mod)
        except ImportError as e:
            raise ConfigError(f"plugins: cannot import method module '{mod}' ({e}); check the name and that its "
                              "folder is on PYTHONPATH") from None
        _LOADED.add(mod)


def methods(config: dict | None = None) -> list[Method]:
    """The methods of ``config``: the built-ins and those its ``plugins`` register, in registration
    order. (A plugin another config loaded in this process is not one of them.)"""
    plugins = tuple((config or {}).get("plugins") or ())
    load(plugins)
    mine = {*BUILTIN, *plugins}
    return [m for m in _REGISTRY.values() if _origin(m) in mine]


def get(name: str, config: dict | None = None) -> Method:
    """The method ``name`` of ``config`` (see :func:`methods`)."""
    found = {m.name: m for m in methods(config)}
    if name not in found:
        raise ConfigError(f"no method named '{name}' (have {', '.join(found)})")
    return found[name]


def _origin(method: Method) -> str:
    """The module that registered ``method`` (its spec's module)."""
    return type(method).__module__


def studies(config: dict) -> dict[str, Study]:
    """Every study by name (a study shared by several methods appears once)."""
    out: dict[str, Study] = {}
    for m in methods(config):
        for s in m.studies:
            out.setdefault(s.name, s)
    return out


def resolve(ref: str) -> Callable:
    """A ``"module:function"`` reference, imported."""
    mod, _, fn = ref.partition(":")
    return getattr(importlib.import_module(mod), fn)


def expected_runs(config: dict) -> Iterator[dict]:
    """Every run the (validated) config declares, as ``dataset, model, method, variant, seed``, its
    folder relative to the results folder (``relpath``), the variant's settings (``config``, as
    run.json records them; None for baselines) and its ``budget`` (:meth:`Method.budget`): every
    (dataset, model) x baseline seed, then the baseline's budget curve (every budget of
    ``baseline.budgets`` but 1 x baseline seed, variant ``b<budget>``, of every network model), then
    every registered method's variants on their datasets x the method's seeds."""
    for ds, model in runs(config):
        for seed in baseline_seeds(config):
            yield {"dataset": ds, "model": model, "method": BASELINE, "variant": None, "seed": seed,
                   "relpath": run_path(ds, model, seed=seed), "config": None, "budget": 1.0}
    for ds, model in budget_runs(config):
        for name, b in budget_variants(config).items():
            for seed in baseline_seeds(config):
                yield {"dataset": ds, "model": model, "method": BASELINE, "variant": name, "seed": seed,
                       "relpath": run_path(ds, model, BASELINE, name, seed), "config": None, "budget": b}
    for m in methods(config):
        for ds, name in m.variants(config):
            for seed in m.seeds(config, name):
                yield {"dataset": ds, "model": m.model(config, name), "method": m.name, "variant": name,
                       "seed": seed, "relpath": m.run_dir(config, ds, name, seed), "config": m.variant(config, name),
                       "budget": m.budget(config, name)}


def with_comparator(schema: dict) -> dict:
    """``schema`` (the shared one with every method's fragment merged) with the optional ``baseline``
    key (``$defs/variant_baseline``) added to the variants of every method block that has
    ``variants``, so no method's fragment need declare it."""
    defs = schema.get("$defs", {})
    for block in (schema.get("properties") or {}).values():
        variants = ((block or {}).get("properties") or {}).get("variants") if isinstance(block, dict) else None
        item = (variants or {}).get("additionalProperties")
        if not isinstance(item, dict):
            continue
        ref = item.get("$ref", "")
        target = defs.get(ref.removeprefix("#/$defs/")) if ref.startswith("#/$defs/") else item
        if isinstance(target, dict) and isinstance(target.get("properties"), dict):
            target["properties"].setdefault(COMPARATOR, {"$ref": "#/$defs/variant_baseline"})
    return schema


def comparator_problems(config: dict) -> list[str]:
    """The ``baseline`` key of every method's variants: a model that trains baselines on each of the
    variant's datasets and has the variant's model's arch (its runs are then a like-for-like
    comparator)."""
    problems = []
    for m in methods(config):
        for name, v in (m.block(config).get("variants") or {}).items():
            if not isinstance(v, dict) or v.get(COMPARATOR) is None:
                continue
            where, base = f"{m.name}.variants.{name}.{COMPARATOR}", v[COMPARATOR]
            if base not in config["models"]:
                problems.append(no_model(where, base, config) + "; name a model whose baseline runs are this "
                                "variant's comparator, or drop the key (default: the variant's own model)")
                continue
            model = m.model(config, name)
            if model not in config["models"]:
                continue  # the method's own check names the missing model
            if config["models"][base]["arch"] != config["models"][model]["arch"]:
                problems.append(f"{where}: model '{base}' is a {config['models'][base]['arch']}, but the variant "
                                f"trains '{model}', a {config['models'][model]['arch']}; name a model of arch "
                                f"{config['models'][model]['arch']}")
            missing = [ds for ds, n in m.variants(config) if n == name and not trains_on(config, base, ds)]
            if missing:
                problems.append(f"{where}: model '{base}' trains no baseline on {', '.join(missing)}, where the "
                                f"variant runs; add {'them' if len(missing) > 1 else 'it'} to models.{base}.datasets "
                                "or limit the variant's datasets")
    return problems


__all__ = ["BUILTIN", "COMPARATOR", "Method", "Study", "comparator_problems", "expected_runs", "get", "load", "methods",
           "register", "resolve", "studies", "with_comparator"]
