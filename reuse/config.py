"""Workflow config: schema validation with defaults, readable errors, and the derived run table.

The schema (``rules/schemas/config.schema.yaml``) is the single description of every key. Validation
fills defaults, then reports *every* problem at once with its key path, e.g.::

    config has 2 problems:
      - train.epochz: unknown key (did you mean 'epochs'?)
      - models.cnn.arch: unknown model arch 'cnn' (did you mean 'cnn1d'?)
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

from reuse.errors import ConfigError, DataError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "rules" / "schemas" / "config.schema.yaml"


def load_schema(path: str | Path | None = None) -> dict:
    return yaml.safe_load(Path(path or SCHEMA_PATH).read_text())


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"]
        node = root
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Insert schema defaults into ``instance`` in place, following properties, maps and $refs.

    Subschemas marked ``x-partial`` (override blocks) are left as written.
    """
    schema = _resolve(schema, root)
    if schema.get("x-partial") or not isinstance(instance, dict):
        return
    for branch in schema.get("oneOf", []) + schema.get("anyOf", []):
        if _resolve(branch, root).get("type") == "object":  # e.g. "null or an object with defaults"
            fill_defaults(instance, branch, root)
    props = schema.get("properties", {})
    for key, sub in props.items():
        sub_r = _resolve(sub, root)
        if key not in instance and "default" in sub_r:
            instance[key] = copy.deepcopy(sub_r["default"])
        if key in instance:
            fill_defaults(instance[key], sub, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in instance:
            if key not in props:
                fill_defaults(instance[key], extra, root)


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> list[str]:
    where = _path(error)
    v = error.validator
    if v == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        out = []
        for k in extra:
            near = difflib.get_close_matches(k, allowed, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else (f"; allowed: {', '.join(allowed)}" if allowed else "")
            out.append(f"{where + '.' if error.absolute_path else ''}{k}: unknown key{hint}")
        return out
    if v == "required":
        return [f"{where}: {error.message.replace(' is a required property', '')} is required but missing"]
    if v == "enum":
        choices = [str(c) for c in error.validator_value]
        near = difflib.get_close_matches(str(error.instance), choices, n=1)
        return [f"{where}: {error.instance!r} is not one of {choices}" + (f" (did you mean '{near[0]}'?)" if near else "")]
    if v == "type":
        hint = ""
        if isinstance(error.instance, str) and "number" in str(error.validator_value):
            try:
                float(error.instance)
                hint = " (YAML reads a number like 5e-4 as text; write 5.0e-4)"
            except ValueError:
                pass
        return [f"{where}: expected {error.validator_value}, got {error.instance!r}{hint}"]
    if v == "oneOf" and error.context:
        # Report the branch the value was meant for: drop the branches whose type did not match.
        meant = [e for e in error.context if e.validator != "type"] or list(error.context)
        return _describe(jsonschema.exceptions.best_match(meant))
    if v == "pattern" and error.absolute_path == error.relative_path and error.schema_path and "propertyNames" in error.schema_path:
        return [f"{where}: name {error.instance!r} must start with a letter and hold only letters, digits and _"]
    return [f"{where}: {error.message}"]


def validate_config(config: dict, schema_path: str | Path | None = None, source: str = "config") -> dict:
    """Validate ``config`` in place (filling defaults) and return it; raise :class:`ConfigError`."""
    schema = load_schema(schema_path)
    fill_defaults(config, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    problems: list[str] = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        if "propertyNames" in error.schema_path:
            problems.append(f"{_path(error) or 'name'}: {error.instance!r} is not a valid name (a letter, then "
                            "letters, digits or _)")
        else:
            problems.extend(_describe(error))
    if not problems:
        problems = _semantic_problems(config)
    problems = list(dict.fromkeys(problems))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{source} has {len(problems)} problem{'s' if len(problems) > 1 else ''}:\n{lines}")
    return config


def _semantic_problems(config: dict) -> list[str]:
    from reuse.data.sources import check_root
    from reuse.models import check_arch

    problems = []
    for name, m in config["models"].items():
        try:
            check_arch(m["arch"], m.get("args", {}))
        except ConfigError as e:
            problems.append(f"models.{name}: {e}")
        for ds in m.get("datasets", []):
            if ds not in config["datasets"]:
                problems.append(f"models.{name}.datasets: no dataset named '{ds}' (have {', '.join(config['datasets'])})")
    for ds, model in runs(config):
        r = recipe_for(config, model)
        where = f"models.{model}.train" if "train" in config["models"][model] else "train"
        late = [e for e in r["checkpoint_epochs"] if e > r["epochs"]]
        if late:
            problems.append(f"{where}.checkpoint_epochs: {late} lie beyond epochs={r['epochs']}")
        late = [m for m in r["schedule"]["milestones"] if m > r["epochs"]]
        if late:
            problems.append(f"{where}.schedule.milestones: {late} lie beyond epochs={r['epochs']}")
    problems += _kd_problems(config)
    problems += _score_problems(config)
    from reuse.methods.adversarial.plan import adv_problems

    problems += adv_problems(config)
    problems += _weights_problems(config)
    from reuse.data.text import config_problems as text_problems

    problems += text_problems(config)
    c = config["cache"]
    if not c["dense"] and not c["topk"]:
        problems.append("cache: dense is false and topk is 0, so nothing would be cached; set one of them")
    for name, spec in config["datasets"].items():
        try:
            check_root(name, spec)
        except DataError as e:
            problems.append(f"datasets.{name}.root: {e}")
    return problems


def _kd_problems(config: dict) -> list[str]:
    problems = []
    n_seeds = len(config["baseline"]["seeds"])
    for name, v in config["kd"]["variants"].items():
        where = f"kd.variants.{name}"
        t = v["teacher"]
        for key, model in (("student", v["student"]), ("teacher.model", t["model"])):
            if model not in config["models"]:
                near = difflib.get_close_matches(model, config["models"], n=1)
                problems.append(f"{where}.{key}: no model named '{model}'" + (f" (did you mean '{near[0]}'?)" if near else ""))
        if problems:
            continue
        epochs = checkpoint_epochs(config, t["model"])
        mixup = v.get("mixup") or {}
        for e in [t["epoch"]] + mixup.get("epochs", []):
            if e != "last" and e not in epochs:
                problems.append(f"{where}: teacher epoch {e} is not a checkpoint epoch of '{t['model']}' {epochs}")
        if t["runs"] > n_seeds:
            problems.append(f"{where}.teacher.runs: {t['runs']} past runs asked for, but baseline.seeds has {n_seeds}")
        if v["mode"] != "single" and t["runs"] < 2:
            problems.append(f"{where}: mode {v['mode']} needs teacher.runs >= 2")
        if mixup.get("kind") == "checkpoint" and len(mixup.get("epochs", [])) != 2:
            problems.append(f"{where}.mixup.epochs: checkpoint MixUp needs two teacher epochs")
        if v["online"] and (v["mode"] != "single" or mixup):
            problems.append(f"{where}: an online teacher is a single run without MixUp")
        if mixup.get("kind") == "checkpoint" and v["mode"] != "single":
            problems.append(f"{where}: checkpoint MixUp uses one past run (mode: single)")
        r = kd_recipe(config, name)
        late = [m for m in r["schedule"]["milestones"] if m > r["epochs"]]
        if late:
            problems.append(f"{where}.train.schedule.milestones: {late} lie beyond epochs={r['epochs']}")
    return problems


DATA_METHODS = ("prune", "curriculum", "reweight")


def _score_problems(config: dict) -> list[str]:
    problems = []
    sc = config["scores"]
    model = sc["model"]
    if model is not None:
        if model not in config["models"]:
            near = difflib.get_close_matches(model, config["models"], n=1)
            return [f"scores.model: no model named '{model}'" + (f" (did you mean '{near[0]}'?)" if near else "")]
        n_seeds = len(config["baseline"]["seeds"])
        if sc["runs"] > n_seeds:
            problems.append(f"scores.runs: {sc['runs']} past runs asked for, but baseline.seeds has {n_seeds}")
        epochs = checkpoint_epochs(config, model)
        for e in sc["epochs"] or []:
            if e != "last" and e not in epochs:
                problems.append(f"scores.epochs: {e} is not a checkpoint epoch of '{model}' {epochs}")
        if "forgetting" in sc["names"] and not recipe_for(config, model)["example_stats"]:
            problems.append(f"scores.names: forgetting needs the runs of '{model}' to record example_stats; set "
                            "train.example_stats: true or drop forgetting")
    for method in DATA_METHODS:
        for name, v in config[method]["variants"].items():
            where = f"{method}.variants.{name}"
            if v["model"] not in config["models"]:
                near = difflib.get_close_matches(v["model"], config["models"], n=1)
                problems.append(f"{where}.model: no model named '{v['model']}'" +
                                (f" (did you mean '{near[0]}'?)" if near else ""))
            if not needs_scores(v):
                continue
            if v["score"] is None:
                problems.append(f"{where}.score: this variant orders examples by a score; name one of "
                                f"{sc['names']}")
            elif model is None:
                problems.append(f"{where}: uses score '{v['score']}' but scores.model is not set; set it to the "
                                "past runs' model whose checkpoints are scored")
            elif v["score"] not in sc["names"]:
                problems.append(f"{where}.score: '{v['score']}' is not computed; add it to scores.names {sc['names']}")
            elif v["epoch"] != "last" and v["epoch"] not in score_epochs(config):
                problems.append(f"{where}.epoch: {v['epoch']} is not a scored epoch {score_epochs(config)}")
    return problems


WEIGHTS_METHODS = ("warm", "soup", "averaging")
WARM_FROM_METHODS = ("baseline", "kd") + DATA_METHODS + ("averaging",)


def _no_model(where: str, model: str, config: dict) -> str:
    near = difflib.get_close_matches(model, config["models"], n=1)
    return f"{where}: no model named '{model}'" + (f" (did you mean '{near[0]}'?)" if near else "")


def _weights_problems(config: dict) -> list[str]:
    """Warm starts, soups and weight averaging: models, the past runs they read, shared starting points."""
    problems = []
    for method in WEIGHTS_METHODS:
        for name, v in config[method]["variants"].items():
            if v["model"] not in config["models"]:
                problems.append(_no_model(f"{method}.variants.{name}.model", v["model"], config))
    if problems:
        return problems
    for name, v in config["warm"]["variants"].items():
        where, f = f"warm.variants.{name}", v["from"]
        if f["model"] not in config["models"]:
            problems.append(_no_model(f"{where}.from.model", f["model"], config))
            continue
        new, old = config["models"][v["model"]], config["models"][f["model"]]
        if (new["arch"], new.get("args", {})) != (old["arch"], old.get("args", {})):
            problems.append(f"{where}: model '{v['model']}' ({new['arch']} {new.get('args', {})}) and from.model "
                            f"'{f['model']}' ({old['arch']} {old.get('args', {})}) differ in architecture; a warm "
                            "start needs the same arch and args")
        if f["method"] == "baseline":
            if f["variant"] is not None:
                problems.append(f"{where}.from.variant: a baseline run has no variant; remove it")
            epochs = checkpoint_epochs(config, f["model"])
            if f["epoch"] != "last" and f["epoch"] not in epochs:
                problems.append(f"{where}.from.epoch: {f['epoch']} is not a checkpoint epoch of '{f['model']}' "
                                f"{epochs}")
            seeds = config["baseline"]["seeds"]
        else:
            past = config[f["method"]]["variants"]
            if f["variant"] not in past:
                near = difflib.get_close_matches(str(f["variant"]), past, n=1)
                problems.append(f"{where}.from.variant: no {f['method']} variant named '{f['variant']}'" +
                                (f" (did you mean '{near[0]}'?)" if near else f"; have {', '.join(past) or 'none'}"))
                continue
            pv = past[f["variant"]]
            if (pv.get("student") or pv.get("model")) != f["model"]:
                problems.append(f"{where}.from.model: {f['method']} variant '{f['variant']}' trains "
                                f"'{pv.get('student') or pv.get('model')}', not '{f['model']}'")
            if f["epoch"] != "last":
                problems.append(f"{where}.from.epoch: only baseline runs keep intermediate checkpoints; use `last`")
            seeds = kd_seeds(config) if f["method"] == "kd" else method_seeds(config, f["method"])
        if f["seed"] is not None and f["seed"] not in seeds:
            problems.append(f"{where}.from.seed: {f['seed']} is not a seed of the past runs {seeds}")
    for name, v in config["soup"]["variants"].items():
        where, ing = f"soup.variants.{name}", v["ingredients"]
        warm = config["warm"]["variants"]
        if ing["variant"] not in warm:
            near = difflib.get_close_matches(ing["variant"], warm, n=1)
            problems.append(f"{where}.ingredients.variant: no warm variant named '{ing['variant']}'" +
                            (f" (did you mean '{near[0]}'?)" if near else f"; add it under warm.variants"))
            continue
        w = warm[ing["variant"]]
        if w["model"] != v["model"]:
            problems.append(f"{where}.model: the ingredients (warm variant '{ing['variant']}') train '{w['model']}', "
                            f"not '{v['model']}'")
        n = len(method_seeds(config, "warm"))
        if ing["runs"] > n:
            problems.append(f"{where}.ingredients.runs: {ing['runs']} runs asked for, but warm has {n} seeds")
        if ing["runs"] > 1 and w["from"]["seed"] is None:
            problems.append(f"{where}.ingredients: the runs of warm variant '{ing['variant']}' start from different "
                            "past runs (its from.seed is null), so their weights lie in different basins and their "
                            f"average fails; set warm.variants.{ing['variant']}.from.seed to one past run's seed")
        if v["recipe"] == "greedy":
            for ds in [d for d, n in weights_variants(config, "soup", check=False) if n == name]:
                if not config["datasets"][ds].get("holdout"):
                    problems.append(f"{where}.recipe: a greedy soup chooses ingredients by held-out accuracy, but "
                                    f"dataset '{ds}' holds no examples out; set datasets.{ds}.holdout (e.g. 10% of "
                                    "the training set) or use recipe: uniform")
                    break
    return list(dict.fromkeys(problems))


def weights_variants(config: dict, method: str, check: bool = True) -> Iterator[tuple[str, str]]:
    """Every (dataset, variant) pair of a weights method (warm, soup, averaging): the variant's and
    its model's datasets; a warm start also needs its past runs on the dataset, a soup its ingredients."""
    for ds in config["datasets"]:
        for name, v in config[method]["variants"].items():
            m = config["models"].get(v["model"], {})
            if not all("datasets" not in x or ds in x["datasets"] for x in (v, m)):
                continue
            if check and method == "warm" and not _warm_source_on(config, v["from"], ds):
                continue
            warm = v.get("ingredients", {}).get("variant")
            if check and method == "soup" and (ds, warm) not in set(weights_variants(config, "warm")):
                continue
            yield ds, name


def _warm_source_on(config: dict, f: dict, ds: str) -> bool:
    if f["method"] == "baseline":
        return (ds, f["model"]) in set(runs(config))
    pairs = kd_variants(config) if f["method"] == "kd" else (
        method_variants(config, f["method"]) if f["method"] in DATA_METHODS else weights_variants(config, f["method"]))
    return (ds, f["variant"]) in set(pairs)


def warm_source(config: dict, variant: str, seed: int) -> dict[str, Any]:
    """The past run a warm start of ``seed`` starts from: ``run`` (its folder relative to the results
    folder, without the dataset: ``<model>/<method>[/<variant>]/s<seed>``), ``ckpt`` (the checkpoint
    file name under ``run/ckpt/``) and ``seed``. By default the past seed is the one that follows
    ``seed`` among the past method's seeds, cyclically (as a KD teacher is chosen)."""
    f = config["warm"]["variants"][variant]["from"]
    if f["method"] == "baseline":
        seeds = config["baseline"]["seeds"]
        epochs = checkpoint_epochs(config, f["model"])
        ckpt = f"e{epochs[-1] if f['epoch'] == 'last' else f['epoch']}.pt"
        folder = f"{f['model']}/baseline"
    else:
        seeds = kd_seeds(config) if f["method"] == "kd" else method_seeds(config, f["method"])
        ckpt = f"e{kd_recipe(config, f['variant'])['epochs']}.pt" if f["method"] == "kd" else "last.pt"
        folder = f"{f['model']}/{f['method']}/{f['variant']}"
    if f["seed"] is not None:
        past = f["seed"]
    else:
        start = seeds.index(seed) + 1 if seed in seeds else 0
        past = (seeds[start:] + seeds[:start])[0]
    return {"run": f"{folder}/s{past}", "ckpt": ckpt, "seed": past}


def kd_recipe(config: dict, variant: str) -> dict:
    """The recipe of a KD variant's students: the student model's recipe with the variant's ``train``
    over it (no `train`: the model's recipe as it is)."""
    v = config["kd"]["variants"][variant]
    return deep_merge(recipe_for(config, v["student"]), v.get("train") or {})


def warm_recipe(config: dict, variant: str) -> dict:
    """The recipe of a warm-started run: its model's recipe with the variant's ``train`` over it; only
    the final checkpoint is kept."""
    v = config["warm"]["variants"][variant]
    return {**deep_merge(recipe_for(config, v["model"]), v["train"]), "checkpoint_epochs": []}


def soup_ingredient_seeds(config: dict, variant: str, seed: int) -> list[int]:
    """The seeds of the warm runs in the soup of ``seed``: ``runs`` of the warm seeds, cyclically from
    ``seed`` (so the soups of different seeds differ)."""
    seeds = method_seeds(config, "warm")
    start = seeds.index(seed) if seed in seeds else 0
    return (seeds[start:] + seeds[:start])[: config["soup"]["variants"][variant]["ingredients"]["runs"]]


def needs_scores(variant: dict) -> bool:
    """Whether a data-method variant reads the score table (random choices do not)."""
    return variant.get("mode") != "random" and variant.get("order") != "random"


def score_epochs(config: dict) -> list[int]:
    """The checkpoint epochs at which past runs are scored, ``last`` resolved."""
    sc = config["scores"]
    all_epochs = checkpoint_epochs(config, sc["model"])
    if sc["epochs"] is None:
        return all_epochs
    return sorted({all_epochs[-1] if e == "last" else e for e in sc["epochs"]})


def score_seeds(config: dict) -> list[int]:
    """The baseline seeds whose runs are scored."""
    return config["baseline"]["seeds"][: config["scores"]["runs"]]


def score_datasets(config: dict) -> list[str]:
    """Datasets that get a score table: those the scored model trains on."""
    model = config["scores"]["model"]
    return [ds for ds, m in runs(config) if m == model] if model is not None else []


def method_variants(config: dict, method: str) -> Iterator[tuple[str, str]]:
    """Every (dataset, variant) pair of a data method (prune, curriculum, reweight)."""
    scored = set(score_datasets(config))
    for ds in config["datasets"]:
        for name, v in config[method]["variants"].items():
            m = config["models"][v["model"]]
            if all("datasets" not in x or ds in x["datasets"] for x in (v, m)) and (ds in scored or not needs_scores(v)):
                yield ds, name


def method_seeds(config: dict, method: str) -> list[int]:
    seeds = config[method]["seeds"]
    return seeds if seeds is not None else config["baseline"]["seeds"]


def variant_score_epoch(config: dict, method: str, variant: str) -> int | None:
    """The scored epoch a data-method variant reads (``last`` resolved), or None without scores."""
    v = config[method]["variants"][variant]
    if not needs_scores(v) or config["scores"]["model"] is None:
        return None
    return score_epochs(config)[-1] if v["epoch"] == "last" else v["epoch"]


def kd_variants(config: dict) -> Iterator[tuple[str, str]]:
    """Every (dataset, variant) pair the config distils."""
    for ds in config["datasets"]:
        for name, v in config["kd"]["variants"].items():
            student, teacher = config["models"][v["student"]], config["models"][v["teacher"]["model"]]
            if all("datasets" not in m or ds in m["datasets"] for m in (v, student, teacher)):
                yield ds, name


def kd_seeds(config: dict) -> list[int]:
    return config["kd"]["seeds"] if config["kd"]["seeds"] is not None else config["baseline"]["seeds"]


def kd_teacher_seeds(config: dict, variant: str, student_seed: int) -> list[int]:
    """The baseline seeds whose runs teach the student of ``student_seed``: the ``runs`` seeds that
    follow it in baseline.seeds, cyclically, with the student's own seed used last."""
    seeds = config["baseline"]["seeds"]
    runs = config["kd"]["variants"][variant]["teacher"]["runs"]
    start = seeds.index(student_seed) + 1 if student_seed in seeds else 0
    order = seeds[start:] + seeds[:start]
    return order[:runs]


def kd_teacher_epochs(config: dict, variant: str) -> list[int]:
    """The teacher checkpoint epochs: one, or two for checkpoint MixUp; ``last`` resolved."""
    v = config["kd"]["variants"][variant]
    last = checkpoint_epochs(config, v["teacher"]["model"])[-1]
    mixup = v.get("mixup") or {}
    epochs = mixup["epochs"] if mixup.get("kind") == "checkpoint" else [v["teacher"]["epoch"]]
    return [last if e == "last" else e for e in epochs]


def expose_checkout(basedir: str) -> None:
    """Put the checkout at ``basedir`` on the PYTHONPATH that workflow jobs inherit, so rule scripts
    import this ``reuse`` also in an environment (e.g. a rule's conda env) where it is not installed."""
    parts = [basedir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != basedir]
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def recipe_for(config: dict, model: str) -> dict:
    """The full training recipe of ``model``: the shared recipe with the model's overrides."""
    return deep_merge(config["train"], config["models"][model].get("train", {}))


def checkpoint_epochs(config: dict, model: str) -> list[int]:
    """Epochs whose checkpoints a baseline run keeps: the configured ones and the final epoch."""
    r = recipe_for(config, model)
    return sorted(set(r["checkpoint_epochs"]) | {r["epochs"]})


def runs(config: dict) -> Iterator[tuple[str, str]]:
    """Every (dataset, model) pair the config trains."""
    for ds in config["datasets"]:
        for model, m in config["models"].items():
            if "datasets" not in m or ds in m["datasets"]:
                yield ds, model


def expected_runs(config: dict) -> Iterator[dict]:
    """Every run the (validated) config declares, as ``dataset, model, method, variant, seed``, its
    folder relative to the results folder (``relpath``) and the variant's settings (``config``, as
    run.json records them; None for baselines). Baselines: every (dataset, model) x baseline seed;
    KD: the student is the run's model; data methods and any later method with a ``variants`` block
    whose variants name their ``model`` (or ``student``): every variant on its datasets x its seeds."""
    for ds, model in runs(config):
        for seed in config["baseline"]["seeds"]:
            yield {"dataset": ds, "model": model, "method": "baseline", "variant": None, "seed": seed,
                   "relpath": f"{ds}/{model}/baseline/s{seed}", "config": None}
    known = {"kd": (kd_variants(config), kd_seeds(config))}
    known.update({m: (method_variants(config, m), method_seeds(config, m)) for m in DATA_METHODS})
    known.update({m: (weights_variants(config, m), method_seeds(config, m)) for m in WEIGHTS_METHODS})
    for method, block in config.items():
        if method in known:
            pairs, seeds = known[method]
        elif isinstance(block, dict) and isinstance(block.get("variants"), dict) and method != "baseline":
            pairs = [(ds, name) for ds in config["datasets"] for name, v in block["variants"].items()
                     if ds in v.get("datasets", [ds])]
            seeds = block.get("seeds") or config["baseline"]["seeds"]
        else:
            continue
        for ds, name in pairs:
            v = block["variants"][name]
            model = v.get("student") or v.get("model")
            if model is None:
                continue
            for seed in seeds:
                yield {"dataset": ds, "model": model, "method": method, "variant": name, "seed": seed,
                       "relpath": f"{ds}/{model}/{method}/{name}/s{seed}", "config": v}
