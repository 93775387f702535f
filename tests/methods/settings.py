"""Per-method test settings, as Composer's ``algorithm_settings.py``: for every built-in method (and
the shared ``scores`` stage) a minimal valid block on a tiny config, and the mistakes the config check
must catch, each with the one problem it reports.

A method that joins the registry (:data:`reuse.methods.registry.BUILTIN`) adds its entry here;
``tests/methods/test_registry.py`` fails until it does. An entry holds:

``block``
    the top-level blocks added to :data:`BASE`: the method's own minimal block plus any block it
    depends on (a soup needs a warm variant with ``from.seed``);
``mistakes``
    :class:`Mistake` s: top-level blocks that *replace* those of the minimal config whole, and the
    start of the single problem they must give (``<key path>: <what is wrong>``);
``text``
    optional: a :class:`Mistake` whose variant changes its inputs, checked on the config's dataset
    turned into a text dataset (``reuse.config._input_problems``).
"""

from __future__ import annotations

import copy
from typing import NamedTuple

# One MNIST-1D dataset, two models of different architectures, 3 epochs with a checkpoint at epoch 1
# (checkpoint epochs [1, 3]), two baseline seeds and scores from both runs of model c.
BASE: dict = {
    "datasets": {"d": {"kind": "mnist1d", "holdout": 20, "mnist1d": {"num_samples": 300, "seed": 3}}},
    "models": {"c": {"arch": "cnn1d", "args": {"channels": 8}}, "m": {"arch": "mlp", "args": {"hidden": [16]}}},
    "train": {"epochs": 3, "checkpoint_epochs": [1]},
    "baseline": {"seeds": [0, 1]},
    # forgetting counts events in the scored runs' example_stats (train.example_stats, on by default)
    "scores": {"model": "c", "runs": 2, "names": ["el2n", "loss", "forgetting"]},
}


class Mistake(NamedTuple):
    id: str
    blocks: dict
    expected: str
    #: a known package bug: the case is expected to fail (strictly, so a fix shows up), for this reason
    xfail: str | None = None


def _with(base: dict, **changes) -> dict:
    """``base`` with top-level keys set (None removes one)."""
    out = copy.deepcopy(base)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def config(method: str, blocks: dict | None = None) -> dict:
    """A fresh config: BASE, the method's minimal blocks, then ``blocks`` replacing top-level keys."""
    return copy.deepcopy({**BASE, **SETTINGS[method]["block"], **(blocks or {})})


# ----------------------------------------------------------------------------- kd
KD_V = {"model": "m", "teacher": {"model": "c"}}


def _kd(**changes) -> dict:
    return {"kd": {"variants": {"v": _with(KD_V, **changes)}}}


KD = {
    "block": {"kd": {"variants": {"v": KD_V}}},
    "mistakes": [
        Mistake("kd-model", _kd(model="x"), "kd.variants.v.model: no model named 'x'"),
        Mistake("kd-teacher-model", _kd(teacher={"model": "cc"}),
                "kd.variants.v.teacher.model: no model named 'cc' (did you mean 'c'?)"),
        Mistake("kd-teacher-epoch", _kd(teacher={"model": "c", "epoch": 2}),
                "kd.variants.v.teacher.epoch: teacher epoch 2 is not a checkpoint epoch of 'c' [1, 3]"),
        Mistake("kd-mixup-epoch", _kd(mixup={"kind": "checkpoint", "epochs": [2, "last"]}),
                "kd.variants.v.mixup.epochs: teacher epoch 2 is not a checkpoint epoch of 'c' [1, 3]"),
        Mistake("kd-teacher-runs", _kd(teacher={"model": "c", "runs": 5}),
                "kd.variants.v.teacher.runs: 5 past runs asked for, but baseline.seeds has 2"),
        Mistake("kd-mode-runs", _kd(mode="ensemble"), "kd.variants.v: mode ensemble needs teacher.runs >= 2"),
        Mistake("kd-mixup-epochs", _kd(mixup={"kind": "checkpoint"}),
                "kd.variants.v.mixup.epochs: checkpoint MixUp needs two teacher epochs"),
        Mistake("kd-online-mixup", _kd(online=True, mixup={"kind": "input"}),
                "kd.variants.v: an online teacher is a single run without MixUp"),
        Mistake("kd-online-mode", _kd(online=True, mode="random", teacher={"model": "c", "runs": 2}),
                "kd.variants.v: an online teacher is a single run without MixUp"),
        Mistake("kd-mixup-mode", _kd(mode="ensemble", teacher={"model": "c", "runs": 2},
                                     mixup={"kind": "checkpoint", "epochs": [1, "last"]}),
                "kd.variants.v: checkpoint MixUp uses one past run (mode: single)"),
        Mistake("kd-milestones", _kd(train={"schedule": {"name": "step", "milestones": [5]}}),
                "kd.variants.v.train.schedule.milestones: [5] lie beyond epochs=3"),
        Mistake("kd-student-renamed", _kd(student="m"), "kd.variants.v.student: renamed to 'model'"),
        Mistake("kd-unknown-key", _kd(temprature=2), "kd.variants.v.temprature: unknown key (did you mean 'temperature'?)"),
        Mistake("kd-mode-enum", _kd(mode="ensembel"),
                "kd.variants.v.mode: 'ensembel' is not one of ['single', 'ensemble', 'random'] (did you mean 'ensemble'?)"),
        Mistake("kd-block-key", {"kd": {"variant": {"v": KD_V}}}, "kd.variant: unknown key (did you mean 'variants'?)"),
    ],
    "text": Mistake("kd-text-mixup", _kd(mixup={"kind": "input"}),
                    "kd.variants.v.mixup: input MixUp mixes inputs, which the token ids of text dataset 'd' are not; "
                    "use checkpoint MixUp or none"),
}


# ----------------------------------------------------------------------------- prune, curriculum, reweight
def _scored(method: str, base: dict, extra: list[Mistake]) -> dict:
    """The checks every score-reading method shares (reuse/methods/scored.py), then its own."""

    def v(**changes) -> dict:
        return {method: {"variants": {"v": _with(base, **changes)}}}

    return {
        "block": {method: {"variants": {"v": base}}},
        "mistakes": [
            Mistake(f"{method}-model", v(model="mm"), f"{method}.variants.v.model: no model named 'mm' (did you mean 'm'?)"),
            Mistake(f"{method}-score-null", v(score=None), f"{method}.variants.v.score: this variant orders examples by a "
                    "score; name one of ['el2n', 'loss', 'forgetting']"),
            Mistake(f"{method}-no-scores-model", {"scores": {"model": None}},
                    f"{method}.variants.v: uses score '{base['score']}' but scores.model is not set"),
            Mistake(f"{method}-score-not-computed", v(score="margin"),
                    f"{method}.variants.v.score: 'margin' is not computed; add it to scores.names"),
            Mistake(f"{method}-epoch", v(epoch=2), f"{method}.variants.v.epoch: 2 is not a scored epoch [1, 3]"),
            Mistake(f"{method}-score-enum", v(score="el2m"), f"{method}.variants.v.score: 'el2m' is not one of"),
            Mistake(f"{method}-unknown-key", v(bugdet=0.5), f"{method}.variants.v.bugdet: unknown key (did you mean 'budget'?)"),
            *extra,
        ],
    }


PRUNE_V = {"model": "c", "score": "el2n", "keep": 0.5}
PRUNE = _scored("prune", PRUNE_V, [
    Mistake("prune-mode-enum", {"prune": {"variants": {"v": {**PRUNE_V, "mode": "hardst"}}}},
            "prune.variants.v.mode: 'hardst' is not one of ['hardest', 'easiest', 'random', 'drop_noisy'] "
            "(did you mean 'hardest'?)"),
    Mistake("prune-keep-required", {"prune": {"variants": {"v": {"model": "c", "score": "el2n"}}}},
            "prune.variants.v: 'keep' is required but missing"),
    Mistake("prune-keep-max", {"prune": {"variants": {"v": {**PRUNE_V, "keep": 1.5}}}},
            "prune.variants.v.keep: 1.5 is greater than the maximum of 1"),
])

CURRICULUM_V = {"model": "m", "score": "forgetting", "epoch": 1}
CURRICULUM = _scored("curriculum", CURRICULUM_V, [
    Mistake("curriculum-order-enum", {"curriculum": {"variants": {"v": {**CURRICULUM_V, "order": "easyy"}}}},
            "curriculum.variants.v.order: 'easyy' is not one of ['easy', 'anti', 'random'] (did you mean 'easy'?)"),
    Mistake("curriculum-pacing-enum", {"curriculum": {"variants": {"v": {**CURRICULUM_V, "pacing": "expo"}}}},
            "curriculum.variants.v.pacing: 'expo' is not one of ['linear', 'exp', 'step'] (did you mean 'exp'?)"),
    Mistake("curriculum-seeds", {"curriculum": {"seeds": [0, 0], "variants": {"v": CURRICULUM_V}}},
            "curriculum.seeds: [0, 0] has non-unique elements"),
])

REWEIGHT_V = {"model": "m", "score": "loss", "strength": 0.5}
REWEIGHT = _scored("reweight", REWEIGHT_V, [
    Mistake("reweight-strength-max", {"reweight": {"variants": {"v": {**REWEIGHT_V, "strength": 2}}}},
            "reweight.variants.v.strength: 2 is greater than the maximum of 1"),
    # `score` is required by the schema, but its default (null) is filled first: the semantic check reports it
    Mistake("reweight-score-missing", {"reweight": {"variants": {"v": {"model": "m"}}}},
            "reweight.variants.v.score: this variant orders examples by a score; name one of"),
])


# ----------------------------------------------------------------------------- adv
ADV_CACHE = {"source": {"model": "c", "runs": 2}, "attack": {"kind": "fgsm", "eps": 0.2}}
ADV_BLOCK = {"robust": {"kind": "fgsm", "eps": 0.2},
             "caches": {"k": ADV_CACHE},
             "variants": {"v": {"model": "c", "cache": "k", "ratio": 0.5},
                          "o": {"model": "m", "online": {"kind": "fgsm", "eps": 0.2}}}}
# a second dataset, on which model m does not train (models.m.datasets)
TWO_DATASETS = {"datasets": {**BASE["datasets"], "e": {"kind": "mnist1d", "mnist1d": {"num_samples": 300, "seed": 4}}},
                "models": {**BASE["models"], "m": {**BASE["models"]["m"], "datasets": ["d"]}}}


def _adv(caches: dict | None = None, **variants) -> dict:
    out = copy.deepcopy(ADV_BLOCK)
    if caches is not None:
        out["caches"] = caches
    for name, v in variants.items():
        if v is None:
            out["variants"].pop(name)
        else:
            out["variants"][name] = v
    return {"adv": out}


ADV = {
    "block": {"adv": ADV_BLOCK},
    "mistakes": [
        Mistake("adv-source-model", _adv(caches={"k": {**ADV_CACHE, "source": {"model": "x"}}}),
                "adv.caches.k.source.model: no model named 'x'"),
        Mistake("adv-source-runs", _adv(caches={"k": {**ADV_CACHE, "source": {"model": "c", "runs": 5}}}),
                "adv.caches.k.source.runs: 5 past runs asked for, but baseline.seeds has 2"),
        Mistake("adv-source-epoch", _adv(caches={"k": {**ADV_CACHE, "source": {"model": "c", "epoch": 2}}}),
                "adv.caches.k.source.epoch: 2 is not a checkpoint epoch of 'c' [1, 3]"),
        Mistake("adv-model", _adv(v={"model": "cc", "cache": "k"}), "adv.variants.v.model: no model named 'cc' (did you mean 'c'?)"),
        Mistake("adv-cache-and-online", _adv(v={"model": "c", "cache": "k", "online": {"kind": "fgsm", "eps": 0.1}}),
                "adv.variants.v: set exactly one of cache (recycled examples, a key of adv.caches) and online"),
        Mistake("adv-neither", _adv(v={"model": "c"}), "adv.variants.v: set exactly one of cache"),
        Mistake("adv-cache", _adv(v={"model": "c", "cache": "kk"}),
                "adv.variants.v.cache: no cache in adv.caches named 'kk' (did you mean 'k'?)"),
        Mistake("adv-ratio", _adv(v={"model": "c", "cache": "k", "use": "advprop", "ratio": 0}),
                "adv.variants.v.ratio: 0 makes no example adversarial"),
        Mistake("adv-model-dataset", {**TWO_DATASETS, **_adv()},
                "adv.variants.o: runs on dataset 'e', where model 'm' does not train (models.m.datasets); set the "
                "variant's datasets"),
        Mistake("adv-cache-dataset", {**TWO_DATASETS, **_adv(caches={"k": {**ADV_CACHE, "datasets": ["d"]}},
                                                             o={"model": "m", "online": {"kind": "fgsm", "eps": 0.2},
                                                                "datasets": ["d"]})},
                "adv.variants.v: runs on dataset 'e' but cache 'k' is not built there (adv.caches.k.datasets)"),
        Mistake("adv-cache-source-dataset", {**TWO_DATASETS, **_adv(caches={"k": {**ADV_CACHE, "source": {"model": "m"}}},
                                                                    o=None)},
                "adv.variants.v: cache 'k' attacks past runs of 'm', which does not train on dataset 'e'"),
        Mistake("adv-use-enum", _adv(v={"model": "c", "cache": "k", "use": "mixx"}),
                "adv.variants.v.use: 'mixx' is not one of ['mix', 'mixup', 'advprop'] (did you mean 'mix'?)"),
        Mistake("adv-attack-kind-enum", _adv(caches={"k": {**ADV_CACHE, "attack": {"kind": "pgdd", "eps": 0.2}}}),
                "adv.caches.k.attack.kind: 'pgdd' is not one of ['fgsm', 'pgd'] (did you mean 'pgd'?)"),
        Mistake("adv-unknown-key", {"adv": {**ADV_BLOCK, "robst": {"kind": "fgsm", "eps": 0.2}}},
                "adv.robst: unknown key (did you mean 'robust'?)"),
    ],
    "text": Mistake("adv-text", _adv(o=None), "adv.variants.v: adversarial examples perturb inputs, which the token ids of text "
                                    "dataset 'd' are not; list non-text `datasets` for it"),
}


# ----------------------------------------------------------------------------- warm, soup, averaging
WARM_V = {"model": "m", "from": {"model": "m", "seed": 0}, "train": {"epochs": 2}}


def _warm(**changes) -> dict:
    return {"warm": {"variants": {"w": _with(WARM_V, **changes)}}}


WARM = {
    "block": {"warm": {"variants": {"w": WARM_V}}},
    "mistakes": [
        Mistake("warm-model", _warm(model="x"), "warm.variants.w.model: no model named 'x'"),
        Mistake("warm-from-model", _warm(**{"from": {"model": "x"}}), "warm.variants.w.from.model: no model named 'x'"),
        Mistake("warm-arch", _warm(**{"from": {"model": "c"}}),
                "warm.variants.w: model 'm' (mlp {'hidden': [16]}) and from.model 'c' (cnn1d {'channels': 8}) differ "
                "in architecture"),
        Mistake("warm-baseline-variant", _warm(**{"from": {"model": "m", "variant": "v"}}),
                "warm.variants.w.from.variant: a baseline run has no variant; remove it"),
        Mistake("warm-from-epoch", _warm(**{"from": {"model": "m", "epoch": 2}}),
                "warm.variants.w.from.epoch: 2 is not a checkpoint epoch of 'm' [1, 3]"),
        Mistake("warm-from-seed", _warm(**{"from": {"model": "m", "seed": 7}}),
                "warm.variants.w.from.seed: 7 is not a seed of the past runs [0, 1]"),
        Mistake("warm-from-method", _warm(**{"from": {"model": "m", "method": "kdd", "variant": "v"}}),
                "warm.variants.w.from.method: no method to start from named 'kdd' (did you mean 'kd'?)"),
        Mistake("warm-from-self", _warm(**{"from": {"model": "m", "method": "warm", "variant": "w"}}),
                "warm.variants.w.from.method: no method to start from named 'warm'"),
        Mistake("warm-from-no-variant", {**_warm(**{"from": {"model": "m", "method": "kd"}}), **KD["block"]},
                "warm.variants.w.from.variant: a kd run is named by its variant; set it to one of v"),
        Mistake("warm-from-variant", {**_warm(**{"from": {"model": "m", "method": "kd", "variant": "x"}}),
                                      **KD["block"]},
                "warm.variants.w.from.variant: no kd variant named 'x'; have v"),
        Mistake("warm-from-past-model", {**_warm(model="c", **{"from": {"model": "c", "method": "kd", "variant": "v"}}),
                                         **KD["block"]},
                "warm.variants.w.from.model: kd variant 'v' trains 'm', not 'c'"),
        Mistake("warm-from-past-epoch", {**_warm(**{"from": {"model": "m", "method": "kd", "variant": "v", "epoch": 1}}),
                                         **KD["block"]},
                "warm.variants.w.from.epoch: only baseline runs keep intermediate checkpoints; use `last`"),
        Mistake("warm-shrink-min", _warm(shrink=-1), "warm.variants.w.shrink: -1 is less than the minimum of 0"),
        Mistake("warm-unknown-key", _warm(perturbe=0.1), "warm.variants.w.perturbe: unknown key (did you mean 'perturb'?)"),
    ],
}

SOUP_V = {"model": "m", "ingredients": {"variant": "w", "runs": 2}}


def _soup(**changes) -> dict:
    return {"soup": {"variants": {"s": _with(SOUP_V, **changes)}}}


SOUP = {
    "block": {**WARM["block"], "soup": {"variants": {"s": SOUP_V}}},
    "mistakes": [
        Mistake("soup-model", _soup(model="x"), "soup.variants.s.model: no model named 'x'"),
        Mistake("soup-ingredients-variant", _soup(ingredients={"variant": "ww", "runs": 2}),
                "soup.variants.s.ingredients.variant: no warm variant named 'ww' (did you mean 'w'?)"),
        Mistake("soup-no-warm", {"warm": {}}, "soup.variants.s.ingredients.variant: no warm variant named 'w'; have "
                                              "none; add it under warm.variants"),
        Mistake("soup-model-mismatch", {"warm": {"variants": {"w": {**WARM_V, "model": "c",
                                                                    "from": {"model": "c", "seed": 0}}}}},
                "soup.variants.s.model: the ingredients (warm variant 'w') train 'c', not 'm'"),
        Mistake("soup-runs", _soup(ingredients={"variant": "w", "runs": 5}),
                "soup.variants.s.ingredients.runs: 5 runs asked for, but warm has 2 seeds"),
        Mistake("soup-runs-default", _soup(ingredients={"variant": "w"}),
                "soup.variants.s.ingredients.runs: 4 runs asked for, but warm has 2 seeds"),
        Mistake("soup-from-seed", {"warm": {"variants": {"w": {**WARM_V, "from": {"model": "m"}}}}},
                "soup.variants.s.ingredients: the runs of warm variant 'w' start from different past runs (its "
                "from.seed is null)"),
        Mistake("soup-greedy-holdout", {**_soup(recipe="greedy"),
                                        "datasets": {"d": {**BASE["datasets"]["d"], "holdout": 0}}},
                "soup.variants.s.recipe: a greedy soup chooses ingredients by held-out accuracy, but dataset 'd' holds "
                "no examples out; set datasets.d.holdout"),
        Mistake("soup-recipe-enum", _soup(recipe="greed"),
                "soup.variants.s.recipe: 'greed' is not one of ['uniform', 'greedy'] (did you mean 'greedy'?)"),
        Mistake("soup-bn-enum", _soup(bn="averag"),
                "soup.variants.s.bn: 'averag' is not one of ['recompute', 'average'] (did you mean 'average'?)"),
        Mistake("soup-ingredients-key", _soup(ingredients={"variant": "w", "run": 2}),
                "soup.variants.s.ingredients.run: unknown key (did you mean 'runs'?)"),
    ],
}

AVERAGING_V = {"model": "c", "kind": "swa", "start": 0.5}


def _averaging(**changes) -> dict:
    return {"averaging": {"variants": {"a": _with(AVERAGING_V, **changes)}}}


AVERAGING = {
    "block": {"averaging": {"variants": {"a": AVERAGING_V}}},
    "mistakes": [
        Mistake("averaging-model", _averaging(model="cc"), "averaging.variants.a.model: no model named 'cc' (did you mean 'c'?)"),
        Mistake("averaging-kind-enum", _averaging(kind="swaa"),
                "averaging.variants.a.kind: 'swaa' is not one of ['swa', 'ema'] (did you mean 'swa'?)"),
        Mistake("averaging-kind-required", _averaging(kind=None), "averaging.variants.a: 'kind' is required but missing"),
        Mistake("averaging-start-max", _averaging(start=1), "averaging.variants.a.start: 1 is greater than or equal to the maximum of 1"),
        Mistake("averaging-unknown-key", _averaging(decy=0.99), "averaging.variants.a.decy: unknown key (did you mean 'decay'?)"),
        Mistake("averaging-seeds", {"averaging": {"seeds": [-1], "variants": {"a": AVERAGING_V}}},
                "averaging.seeds.0: -1 is less than the minimum of 0"),
    ],
}


# ----------------------------------------------------------------------------- scores (a shared stage)
def _scores(**changes) -> dict:
    return {"scores": _with(BASE["scores"], **changes)}


SCORES = {
    "block": {},  # BASE holds the scores block
    "mistakes": [
        Mistake("scores-model", _scores(model="cc"), "scores.model: no model named 'cc' (did you mean 'c'?)"),
        Mistake("scores-runs", _scores(runs=5), "scores.runs: 5 past runs asked for, but baseline.seeds has 2"),
        Mistake("scores-epochs", _scores(epochs=[2, "last"]), "scores.epochs: 2 is not a checkpoint epoch of 'c' [1, 3]"),
        Mistake("scores-forgetting", {"models": {**BASE["models"], "c": {**BASE["models"]["c"],
                                                                          "train": {"example_stats": False}}}},
                "scores.names: forgetting needs the runs of 'c' to record example_stats; set train.example_stats: "
                "true or drop forgetting"),
        Mistake("scores-names-enum", _scores(names=["el2m"]), "scores.names.0: 'el2m' is not one of"),
        Mistake("scores-unknown-key", _scores(run=2), "scores.run: unknown key (did you mean 'runs'?)"),
    ],
}


# ----------------------------------------------------------------------------- bias
BIAS_V = {"model": "m", "from": {"model": "m"}, "classes": [3], "grid": {"low": -2, "high": 2, "step": 0.5}}


def _bias(**changes) -> dict:
    return {"bias": {"variants": {"b": _with(BIAS_V, **changes)}}}


BIAS = {
    "block": {"bias": {"variants": {"b": BIAS_V}}},
    "mistakes": [
        Mistake("bias-model", _bias(model="x"), "bias.variants.b.model: no model named 'x'"),
        Mistake("bias-arch", _bias(**{"from": {"model": "c"}}),
                "bias.variants.b: model 'm' (mlp {'hidden': [16]}) and from.model 'c' (cnn1d {'channels': 8}) differ "
                "in architecture"),
        Mistake("bias-from-self", _bias(**{"from": {"model": "m", "method": "bias", "variant": "b"}}),
                "bias.variants.b.from.method: no method to start from named 'bias'"),
        Mistake("bias-classes-twice", _bias(classes=[3, 3]), "bias.variants.b.classes: [3, 3] lists a class twice"),
        Mistake("bias-grid", _bias(grid={"low": 2, "high": -2}), "bias.variants.b.grid: low 2 must be below high -2"),
        Mistake("bias-per-class-all", _bias(classes="all", mode="per_class"),
                "bias.variants.b.classes: mode per_class searches every combination"),
        Mistake("bias-per-class-size", _bias(classes=[0, 1, 2, 3], mode="per_class", grid={"step": 0.1}),
                "bias.variants.b.classes: a per_class search over 4 classes"),
        Mistake("bias-holdout", {**_bias(),
                                 "datasets": {"d": {**BASE["datasets"]["d"], "holdout": 0}}},
                "bias.variants.b: the shift is chosen on held-out examples (never on test), but dataset 'd' holds none "
                "out; set datasets.d.holdout"),
        Mistake("bias-mode", _bias(mode="shard"), "bias.variants.b.mode: 'shard' is not one of ['shared', 'per_class']"),
        Mistake("bias-classes-type", _bias(classes="some"), "bias.variants.b.classes:"),
    ],
}

# ----------------------------------------------------------------------------- search, retrain (sequences)
SEARCH_B = {"model": "m", "trials": 2, "seeds": [0],
            "space": {"lr": {"low": 0.01, "high": 0.1, "log": True}, "epochs": {"low": 2, "high": 3}},
            "policies": {"scratch": {}, "kd": {"teacher": "best"}, "sh": {"pruner": {"kind": "halving",
                                                                                   "min_resource": 1}}}}


def _search(**changes) -> dict:
    return {"search": _with(SEARCH_B, **changes)}


def _space(**params) -> dict:
    return _search(space={**SEARCH_B["space"], **params})


SEARCH = {
    "block": {"search": SEARCH_B},
    "mistakes": [
        Mistake("search-model", _search(model="mm"), "search.model: no model named 'mm' (did you mean 'm'?)"),
        Mistake("search-missing", {"search": {"model": "m", "policies": {"p": {}}}},
                "search: space missing; a search block names its model, space, policies"),
        Mistake("search-space-unknown", _space(lrr={"low": 0.1, "high": 0.2}),
                "search.space.lrr: unknown hyperparameter 'lrr' (did you mean 'lr'?)"),
        Mistake("search-space-empty-range", _space(lr={"low": 0.1, "high": 0.01}),
                "search.space.lr: empty range, low 0.1 > high 0.01; swap them"),
        Mistake("search-space-log-bound", _space(lr={"low": 0.0, "high": 0.1, "log": True}),
                "search.space.lr: a log range needs positive bounds (low is 0.0)"),
        Mistake("search-space-one-value", _space(weight_decay={"low": 0.1, "high": 0.1}),
                "search.space.weight_decay: the range holds one value (0.1)"),
        Mistake("search-space-form", _space(width={"choices": [8, 16], "low": 8}),
                "search.space.width: choices do not combine with low; give one form"),
        Mistake("search-space-arg", _space(**{"args.depth": {"choices": [1, 2]}}),
                "search.space.args.depth: architecture 'mlp' takes no argument 'depth'"),
        Mistake("search-space-recipe", _space(**{"train.optimizer.lrr": {"low": 0.1, "high": 0.2}}),
                "search.space.train.optimizer.lrr: the recipe of 'm' has no key optimizer.lrr"),
        Mistake("search-space-model", _space(model={"choices": ["m", "x"]}),
                "search.space.model: no model named 'x'"),
        Mistake("search-pruner-budget", _search(policies={"p": {"pruner": {"kind": "hyperband", "min_resource": 3}}}),
                "search.policies.p.pruner.min_resource: 3 epochs, but a trial may train only 2"),
        Mistake("search-repeats", _search(seeds=[]), "search.seeds: a sequence needs at least one repeat"),
        Mistake("search-top", {"search": {**SEARCH_B, "kd": {"top": 1}, "policies": {"p": {"teacher": "top"}}}},
                "search.policies.p: teacher top draws from the top few trials; set search.kd.top >= 2"),
        Mistake("search-no-val", {"datasets": {"d": {**BASE["datasets"]["d"], "holdout": 0}}},
                "search: dataset 'd' has no validation split"),
        Mistake("search-policy-key", _search(policies={"p": {"teachr": "best"}}),
                "search.policies.p.teachr: unknown key (did you mean 'teacher'?)"),
        Mistake("search-sampler", _search(sampler={"name": "tpe", "startup_trials": 2}),
                "search.sampler.startup_trials: 2 random trials leave TPE none of the 2 trials"),
    ],
}

RETRAIN_B = {"model": "c", "seeds": [0], "parts": [0.5, 1.0], "train": {"epochs": 2},
             "policies": {"scratch": {}, "warm": {"init": "previous"}, "kd": {"teacher": "previous"},
                          "sel": {"select": {"score": "forgetting", "keep": 0.5}}}}


def _retrain(**changes) -> dict:
    return {"retrain": _with(RETRAIN_B, **changes)}


RETRAIN = {
    "block": {"retrain": RETRAIN_B},
    "mistakes": [
        Mistake("retrain-model", _retrain(model="cc"), "retrain.model: no model named 'cc' (did you mean 'c'?)"),
        Mistake("retrain-parts-order", _retrain(parts=[0.5, 0.25, 1.0]),
                "retrain.parts: [0.5, 0.25, 1.0] must increase and end at 1.0"),
        Mistake("retrain-parts-end", _retrain(parts=[0.25, 0.5]), "retrain.parts: [0.25, 0.5] must increase and end at 1.0"),
        Mistake("retrain-repeats", _retrain(seeds=[]), "retrain.seeds: a sequence needs at least one repeat"),
        Mistake("retrain-select-keep", _retrain(policies={"p": {"select": {"score": "el2n"}}}),
                "retrain.policies.p.select: 'keep' is required but missing"),
        Mistake("retrain-score-enum", _retrain(policies={"p": {"select": {"score": "grand", "keep": 0.5}}}),
                "retrain.policies.p.select.score: 'grand' is not one of ['el2n', 'forgetting']"),
    ],
}


# ----------------------------------------------------------------------------- interleave
INTERLEAVE_B = {"tasks": {"low": [0, 1, 2, 3, 4], "high": [5, 6, 7, 8, 9]}, "steps": 8,
                "variants": {"r2": {"model": "c", "rounds": 2}, "joint": {"model": "m", "schedule": "joint"}}}


def _interleave(**changes) -> dict:
    return {"interleave": _with(INTERLEAVE_B, **changes)}


INTERLEAVE = {
    "block": {"interleave": INTERLEAVE_B},
    "mistakes": [
        Mistake("interleave-model", _interleave(variants={"v": {"model": "cc"}}),
                "interleave.variants.v.model: no model named 'cc' (did you mean 'c'?)"),
        Mistake("interleave-tasks-missing", _interleave(tasks=None), "interleave.tasks: missing"),
        Mistake("interleave-tasks-overlap", _interleave(tasks={"a": [0, 1, 2], "b": [2, 3]}),
                "interleave.tasks.b: class 2 is also in task 'a'; tasks hold disjoint classes"),
        Mistake("interleave-tasks-class", _interleave(tasks={"a": [0, 1], "b": [9, 10]}),
                "interleave.tasks.b: class 10 does not exist on dataset 'd' (mnist1d, classes 0..9)"),
        Mistake("interleave-tasks-one", _interleave(tasks={"a": [0, 1], "b": [2]}),
                "interleave.tasks.b: [2] is too short"),
        Mistake("interleave-preset", _interleave(tasks="cifar10_superclasses"),
                "interleave.tasks: no preset named 'cifar10_superclasses' (have cifar100_superclasses)"),
        Mistake("interleave-rounds", _interleave(variants={"v": {"model": "c", "rounds": 5}}),
                "interleave.variants.v.rounds: 5 rounds need 5 turns per task, but a task gets 4 of the 8 steps"),
        Mistake("interleave-joint-rounds", _interleave(variants={"v": {"model": "c", "schedule": "joint",
                                                                       "rounds": 2}}),
                "interleave.variants.v.rounds: joint training takes no rounds; remove it"),
        Mistake("interleave-epochs", _interleave(variants={"v": {"model": "c", "train": {"epochs": 3}}}),
                "interleave.variants.v.train.epochs: not used (the run's length is interleave.steps"),
        Mistake("interleave-schedule", _interleave(variants={"v": {"model": "c", "schedule": "interleave"}}),
                "interleave.variants.v.schedule: 'interleave' is not one of"),
    ],
}


# ----------------------------------------------------------------------------- transfer
# a target dataset "t" with a val split (the influences read it); models c and m train baselines on "d" only
# (the transfer model need not)
TRANSFER_T = {"kind": "mnist1d", "mnist1d": {"num_samples": 200, "seed": 5}, "holdout": 40}
TRANSFER_DATA = {"datasets": {**BASE["datasets"], "t": TRANSFER_T},
                 "models": {k: {**v, "datasets": ["d"]} for k, v in BASE["models"].items()}}
TRANSFER_B = {"source": "d", "target": "t", "model": "c", "subsets": 6, "seeds": [0], "train": {"epochs": 1},
              "transfer": {"probe": {"epochs": 2}, "finetune": {"epochs": 1}},
              "counterfactual": {"k": [2], "kinds": ["harmful", "random"]}}


def _transfer(**changes) -> dict:
    return {"transfer": _with(TRANSFER_B, **changes)}


TRANSFER = {
    "block": {**TRANSFER_DATA, "transfer": TRANSFER_B},
    "mistakes": [
        Mistake("transfer-missing", {"transfer": {"source": "d"}}, "transfer: target, model missing"),
        Mistake("transfer-source", _transfer(source="dd"),
                "transfer.source: no dataset named 'dd' (did you mean 'd'?)"),
        Mistake("transfer-model", _transfer(model="cc"), "transfer.model: no model named 'cc' (did you mean 'c'?)"),
        Mistake("transfer-shape", {"datasets": {**TRANSFER_DATA["datasets"], "t": {
            **TRANSFER_T, "mnist1d": {"num_samples": 200, "seed": 5, "final_seq_length": 60}}}},
            "transfer.target: dataset 't' has inputs of shape [1, 60], which model 'c' (cnn1d) built for the source "
            "'d' ([1, 40]) cannot take"),
        Mistake("transfer-no-val", {"datasets": {**TRANSFER_DATA["datasets"], "t": {
            k: v for k, v in TRANSFER_T.items() if k != "holdout"}}},
            "transfer.target: dataset 't' has no validation split; the influences, and the classes the harmful and "
            "helpful counterfactuals remove, are estimated on it (never on the test split, which only scores the "
            "transfers); set datasets.t.holdout"),
        Mistake("transfer-fraction", _transfer(fraction=1.0), "transfer.fraction: 1.0 lies outside (0, 1)"),
        Mistake("transfer-fraction-zero", _transfer(fraction=0), "transfer.fraction: 0 lies outside (0, 1)"),
        Mistake("transfer-subsets", _transfer(subsets=3),
                "transfer.subsets: 3 subsets of 5 of the 10 source classes (subset_seed 0) leave class(es) [8] in no "
                "subset"),
        Mistake("transfer-k", _transfer(counterfactual={"k": [2, 10]}),
                "transfer.counterfactual.k: 10 removes all of the 10 source classes; every k must be below 10"),
        Mistake("transfer-k-over", _transfer(counterfactual={"k": [12]}),
                "transfer.counterfactual.k: 12 removes more than all of the 10 source classes"),
        Mistake("transfer-kind", _transfer(counterfactual={"kinds": ["harmfull"]}),
                "transfer.counterfactual.kinds.0: 'harmfull' is not one of ['harmful', 'helpful', 'random'] "
                "(did you mean 'harmful'?)"),
        Mistake("transfer-metric", _transfer(influence={"metric": "probs"}),
                "transfer.influence.metric: 'probs' is not one of ['prob', 'margin', 'correct'] "
                "(did you mean 'prob'?)"),
        Mistake("transfer-classes", _transfer(classes=12),
                "transfer.classes: 12, but source 'd' has 10 classes; set it to 10 or null"),
        Mistake("transfer-unknown-key", _transfer(subset=4), "transfer.subset: unknown key (did you mean 'subsets'?)"),
    ],
}


# ----------------------------------------------------------------------------- specialists
SPECIALISTS_V = {"model": "m", "from": {"model": "m"}, "groups": 3, "size": 4, "train": {"epochs": 1}}


def _specialists(**changes) -> dict:
    return {"specialists": {"variants": {"s": _with(SPECIALISTS_V, **changes)}}}


SPECIALISTS = {
    "block": {"specialists": {"variants": {"s": SPECIALISTS_V}}},
    "mistakes": [
        Mistake("specialists-model", _specialists(model="x"), "specialists.variants.s.model: no model named 'x'"),
        Mistake("specialists-arch", _specialists(**{"from": {"model": "c"}}),
                "specialists.variants.s: model 'm' (mlp {'hidden': [16]}) and from.model 'c' (cnn1d {'channels': 8}) "
                "differ"),
        Mistake("specialists-groups", _specialists(groups=11),
                "specialists.variants.s.groups: 11 groups of the 10 classes of dataset 'd'; set at most 10"),
        Mistake("specialists-size", _specialists(size=10),
                "specialists.variants.s.size: a group of 10 of the 10 classes of dataset 'd' leaves its dustbin empty"),
        Mistake("specialists-top-n", _specialists(top_n=12),
                "specialists.variants.s.top_n: 12 exceeds the 10 classes of dataset 'd'"),
        Mistake("specialists-epochs", _specialists(train={"epochs": 0}),
                "specialists.variants.s.train.epochs: 0 is less than the minimum of 1"),
        Mistake("specialists-milestones", _specialists(train={"epochs": 2, "schedule": {"name": "step",
                                                                                        "milestones": [5]}}),
                "specialists.variants.s.train.schedule.milestones: [5] lie beyond epochs=2"),
        Mistake("specialists-enrichment", _specialists(enrichment=0), "specialists.variants.s.enrichment:"),
        Mistake("specialists-from-self", _specialists(**{"from": {"model": "m", "method": "specialists",
                                                                  "variant": "s"}}),
                "specialists.variants.s.from.method: no method to start from named 'specialists'"),
    ],
}


SETTINGS: dict[str, dict] = {
    "kd": KD,
    "prune": PRUNE,
    "curriculum": CURRICULUM,
    "reweight": REWEIGHT,
    "adv": ADV,
    "warm": WARM,
    "soup": SOUP,
    "averaging": AVERAGING,
    "bias": BIAS,
    "search": SEARCH,
    "retrain": RETRAIN,
    "interleave": INTERLEAVE,
    "transfer": TRANSFER,
    "specialists": SPECIALISTS,
    "scores": SCORES,
}

#: the entries that are not registered methods (shared stages)
SHARED = ("scores",)
