"""Workflow config: schema validation with defaults and readable errors.

The schema is the single description of every key: ``rules/schemas/config.schema.yaml`` for the
shared keys, with each registered method's fragment (``reuse/methods/<name>/schema.yaml``) merged in.
Validation fills defaults, then reports *every* problem at once with its key path, e.g.::

    config has 2 problems:
      - train.epochz: unknown key (did you mean 'epochs'?)
      - models.cnn.arch: unknown model arch 'cnn' (did you mean 'cnn1d'?)

The shared checks live here; each method checks its own block (:meth:`Method.problems`). What a
config plans (recipes, checkpoint epochs, run paths) is in the leaf :mod:`reuse.plan`, and the run
list in :func:`reuse.methods.registry.expected_runs`; both are re-exported here.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from reuse.data.clusters import config_problems as clusters_problems
from reuse.data.sources import check_root
from reuse.data.tabular import config_problems as tabular_problems
from reuse.data.text import config_problems as text_problems
from reuse.errors import ConfigError, DataError
from reuse.methods import registry
from reuse.methods.registry import expected_runs
from reuse.models import check_arch
from reuse.models.gbdt import config_problems as tree_problems
from reuse.plan import (budget_variant, checkpoint_epochs, deep_merge, expose_checkout, late_milestones, no_model,
                        recipe_for, runs, score_datasets, score_epochs, score_seeds, unknown)

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "rules" / "schemas" / "config.schema.yaml"


def load_schema(path: str | Path | None = None, plugins: list[str] | tuple[str, ...] = ()) -> dict:
    """The shared schema with every registered method's fragment merged in (its ``properties`` as
    top-level blocks, its ``$defs`` beside the shared ones); ``plugins``: modules of more methods."""
    schema = yaml.safe_load(Path(path or SCHEMA_PATH).read_text())
    seen: set[Path] = set()
    for m in registry.methods({"plugins": list(plugins)}):
        if m.schema_file is None or (m.folder / m.schema_file) in seen:
            continue
        seen.add(m.folder / m.schema_file)
        frag = m.schema()
        for kind in ("properties", "$defs"):
            for key, sub in (frag.get(kind) or {}).items():
                if key in schema.setdefault(kind, {}):
                    raise ConfigError(f"method '{m.name}' ({m.folder / m.schema_file}): {kind} '{key}' is already "
                                      "defined by the shared schema or another method; rename it")
                schema[kind][key] = sub
    return registry.with_comparator(schema)


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
        renamed = error.schema.get("x-renamed", {})
        extra = [k for k in error.instance if k not in allowed]
        out = []
        for k in extra:
            if k in renamed:
                out.append(f"{where + '.' if error.absolute_path else ''}{k}: renamed to '{renamed[k]}'; write "
                           f"{renamed[k]}: instead")
                continue
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
    plugins = config.get("plugins") if isinstance(config, dict) else None
    schema = load_schema(schema_path, plugins if isinstance(plugins, list) else ())
    fill_defaults(config, schema, schema)
    validator = jsonschema.Draft202012Validator(schema)
    problems: list[str] = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        if "propertyNames" in error.schema_path:
            problems.append(f"{_path(error) or 'name'}: {error.instance!r} is not a valid name (a letter, then "
                            "letters, digits or _)")
        else:
            problems.extend(_describe(error))
    report = config.get("report") if isinstance(config, dict) else None
    if isinstance(report, dict) and "bootstrap" in report:  # replaced: every interval is a t-interval now
        problems = [p for p in problems if not p.startswith("report.bootstrap")]
        problems.append("report.bootstrap: intervals are Student-t intervals over seeds now, not a bootstrap "
                        "(docs/report.md); replace it by report.confidence (e.g. confidence: 0.95)")
    if not problems:
        problems = _semantic_problems(config)
    problems = list(dict.fromkeys(problems))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{source} has {len(problems)} problem{'s' if len(problems) > 1 else ''}:\n{lines}")
    return config


def _semantic_problems(config: dict) -> list[str]:
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
        problems += late_milestones(where, r)
    problems += _budget_problems(config)
    problems += _score_problems(config)
    for method in registry.methods(config):
        problems += method.problems(config)
    problems += registry.comparator_problems(config)
    problems += text_problems(config)
    problems += tabular_problems(config)
    problems += tree_problems(config, registry.methods(config))
    problems += clusters_problems(config)
    problems += _input_problems(config)
    c = config["cache"]
    if not c["dense"] and not c["topk"]:
        problems.append("cache: dense is false and topk is 0, so nothing would be cached; set one of them")
    for name, spec in config["datasets"].items():
        try:
            check_root(name, spec)
        except DataError as e:
            problems.append(f"datasets.{name}.root: {e}")
    return problems


def _input_problems(config: dict) -> list[str]:
    """Variants that change their inputs (a capability each method declares,
    :meth:`Method.perturbs_inputs`) on datasets of token ids, which no such change fits."""
    text = {ds for ds, spec in config["datasets"].items() if spec["kind"] == "text"}
    problems = []
    for method in registry.methods(config):
        for ds, name in method.variants(config):
            change = method.perturbs_inputs(config, name) if ds in text else None
            if change:
                key, why = change
                problems.append(f"{method.name}.variants.{name}{'.' + key if key else ''}: {why}, which the token "
                                f"ids of text dataset '{ds}' are not; {method.input_fix}")
    return problems


def _budget_problems(config: dict) -> list[str]:
    """``baseline.budgets``: the budget curve holds the baseline run itself (1), and no two budgets
    share a folder name (``b<budget>``)."""
    budgets = config["baseline"]["budgets"]
    problems = []
    if not any(float(b) == 1 for b in budgets):
        problems.append(f"baseline.budgets: {budgets} lacks 1, the baseline runs themselves (the other budgets "
                        f"are multiples of their epochs); write budgets: {sorted([1, *budgets])}")
    names = [budget_variant(b) for b in budgets]
    same = sorted({n for n in names if names.count(n) > 1})
    if same:
        problems.append(f"baseline.budgets: {budgets} has budgets that share a run folder ({', '.join(same)}); "
                        "drop the duplicates")
    return problems


def _score_problems(config: dict) -> list[str]:
    """The ``scores`` block: the past runs' model, how many runs and which epochs are scored."""
    problems = []
    sc = config["scores"]
    model = sc["model"]
    if model is None:
        return problems
    if model not in config["models"]:
        return [no_model("scores.model", model, config)]
    n_seeds = len(config["baseline"]["seeds"])
    if sc["runs"] > n_seeds:
        problems.append(f"scores.runs: {sc['runs']} past runs asked for, but baseline.seeds has {n_seeds}")
    epochs = checkpoint_epochs(config, model)
    for e in sc["epochs"] or []:
        if e != "last" and e not in epochs:
            problems.append(f"scores.epochs: {e} is not a checkpoint epoch of '{model}' {epochs}; add it to the "
                            "model's checkpoint_epochs or drop it")
    if "forgetting" in sc["names"] and not recipe_for(config, model)["example_stats"]:
        problems.append(f"scores.names: forgetting needs the runs of '{model}' to record example_stats; set "
                        "train.example_stats: true or drop forgetting")
    return problems


__all__ = ["ConfigError", "SCHEMA_PATH", "checkpoint_epochs", "deep_merge", "expected_runs", "expose_checkout",
           "fill_defaults", "load_schema", "recipe_for", "runs", "score_datasets", "score_epochs", "score_seeds",
           "unknown", "validate_config"]
