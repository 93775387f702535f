"""The ``transfer`` block: which source classes help or hurt transfer to a target (Jain, Salman,
Khaddaj, Wong, Park, Madry, "A Data-Based Perspective on Transfer Learning", CVPR 2023).

M source runs each train on a random subset of the source classes (run i on subset i: the variant
``subsets``, seeds 0..M-1) and are transferred to the target twice, by a linear probe on frozen
features and by a full fine-tune. The influence table (this folder's ``rules.smk``) compares the
target predictions of the runs with and without each class. Then, once per seed: the full source
(``full``), and the source without the k most harmful, the k most helpful or k random classes
(``harmful_k<k>``, ``helpful_k<k>``, ``random_k<k>``), each transferred the same way. Every run lives
under the source dataset: ``<source>/<model>/transfer/<variant>/s<seed>``.

The target needs a validation split (``datasets.<target>.holdout``): the influences, and so the
classes a counterfactual removes, are estimated on the transfers' predictions of its validation
examples; its test split only scores the transfers.
"""

from __future__ import annotations

from typing import Iterator

from reuse.methods.registry import Method, Study, register
from reuse.methods.transfer import influence as inf
from reuse.plan import block_seeds, deep_merge, late_milestones, no_model, recipe_for, unknown

SUBSETS, FULL = "subsets", "full"
REQUIRED = ("source", "target", "model")
#: architectures that pool their features over space, so they take inputs of another spatial size (with
#: the same channels); every other architecture takes only the input shape it was built for
SIZE_FREE = ("resnet",)
MNIST1D_LENGTH = 40  # the mnist1d package's final_seq_length


def input_shape(spec: dict) -> list[int] | None:
    """A dataset's input shape from its config alone (None for token ids: text)."""
    kind = spec["kind"]
    if kind == "mnist1d":
        return [1, (spec.get("mnist1d") or {}).get("final_seq_length", MNIST1D_LENGTH)]
    if kind in ("mnist", "fashion_mnist"):
        return [1, 28, 28]
    if kind in ("cifar10", "cifar100"):
        return [3, 32, 32]
    if kind == "imagefolder":
        return [3, spec.get("image_size", 224), spec.get("image_size", 224)]
    return None


def class_count(spec: dict) -> int | None:
    """A dataset's number of classes from its config alone (None where only reading it tells)."""
    kind = spec["kind"]
    if kind == "mnist1d":
        return len((spec.get("mnist1d") or {}).get("classes") or range(10))
    return {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}.get(kind)


def takes(arch: str, source: list[int], target: list[int]) -> bool:
    """Whether a model of ``arch`` built for inputs of shape ``source`` takes inputs of shape ``target``."""
    if source == target:
        return True
    return arch.startswith(SIZE_FREE) and len(source) == len(target) and source[0] == target[0]


def _runs_extra(config: dict, dataset: str) -> dict[str, list[str]]:
    """The counterfactual study's inputs: the transfer.json of every full-source and counterfactual run."""
    m = TRANSFER
    return {"transfer_runs": [f"{m.run_dir(config, d, v, s)}/transfer.json" for d, v in m.variants(config)
                     if d == dataset and v != SUBSETS for s in m.seeds(config, v)]}


def _influence_extra(config: dict, dataset: str) -> dict[str, list[str]]:
    files = TRANSFER.influence_files(config)
    return {"table": [files["table"]], "meta": [files["meta"]]}


def _by_class_extra(config: dict, dataset: str) -> dict[str, list[str]]:
    files = TRANSFER.influence_files(config)
    return {"by_class": [files["by_class"]], "meta": [files["meta"]]}


def _study_params(config: dict) -> dict:
    b = config.get("transfer") or {}
    return {"confidence": config["report"]["confidence"], "top": (b.get("influence") or {}).get("top", 3)}


class Transfer(Method):
    name = "transfer"
    title = "transfer learning from source runs on class subsets: which source classes help or hurt the target"
    stage = "reuse.methods.transfer.stage:train"
    # a run's test accuracy is its source model's on the source task (a subset run's on the classes it
    # never saw too); what the method measures, the target's, is in its studies: on no frontier
    on_frontier = False
    rules_file = "rules.smk"
    studies = (
        Study("transfer_counterfactual", ("transfer",), "reuse.methods.transfer.stage:counterfactual_study",
              extra=_runs_extra, params=_study_params, charts="reuse.methods.transfer.charts:counterfactual_charts"),
        Study("transfer_influence", ("transfer",), "reuse.methods.transfer.stage:influence_study",
              extra=_influence_extra, params=_study_params, charts="reuse.methods.transfer.charts:influence_charts"),
        Study("transfer_subpopulations", ("transfer",), "reuse.methods.transfer.stage:subpopulation_study",
              extra=_by_class_extra, params=_study_params, charts="reuse.methods.transfer.charts:subpopulation_charts"),
    )

    # -- the block
    def declared(self, config: dict) -> bool:
        """Whether the block names its source, target and model (an incomplete one is a problem)."""
        b = self.block(config)
        return all(k in b for k in REQUIRED)

    def _usable(self, config: dict) -> bool:
        b = self.block(config)
        return self.declared(config) and b["model"] in config["models"] and \
            b["source"] in config["datasets"] and b["target"] in config["datasets"]

    def num_classes(self, config: dict) -> int | None:
        """C: the block's ``classes``, or the source dataset's where its config says."""
        b = self.block(config)
        return b.get("classes") or class_count(config["datasets"][b["source"]])

    def counterfactuals(self, config: dict) -> list[tuple[str, int]]:
        c = self.block(config)["counterfactual"]
        return [(kind, k) for kind in c["kinds"] for k in sorted(c["k"])]

    @staticmethod
    def split(name: str) -> tuple[str, int]:
        """A variant's kind (subsets, full, harmful, helpful, random) and k (0 but for counterfactuals)."""
        kind, _, k = name.partition("_k")
        return kind, int(k or 0)

    def variant(self, config: dict, name: str) -> dict:
        """What run.json records as the run's ``config``."""
        b = self.block(config)
        kind, k = self.split(name)
        out = {"kind": kind, "k": k, "source": b["source"], "target": b["target"]}
        return {**out, "fraction": b["fraction"]} if kind == SUBSETS else out

    def model(self, config: dict, name: str) -> str:
        return self.block(config)["model"]

    def variants(self, config: dict) -> Iterator[tuple[str, str]]:
        """The variants on the source dataset (the model need not train baselines there)."""
        if not self._usable(config):
            return
        src = self.block(config)["source"]
        yield src, SUBSETS
        yield src, FULL
        for kind, k in self.counterfactuals(config):
            yield src, f"{kind}_k{k}"

    def seeds(self, config: dict, variant: str | None = None) -> list[int]:
        """Subset run i has seed i; the other runs, the block's seeds (or the baseline seeds)."""
        if variant == SUBSETS:
            return list(range(self.block(config)["subsets"]))
        return block_seeds(config, self.name)

    def recipe(self, config: dict, name: str) -> dict:
        b = self.block(config)
        return {**deep_merge(recipe_for(config, b["model"]), b.get("train") or {}), "checkpoint_epochs": [],
                "example_stats": False}

    def example_stats(self, config: dict, name: str) -> bool:
        return False

    def extra_outputs(self, config: dict, name: str) -> list[str]:
        """Per run: both transfers' predictions of the target's test examples and, as ``val_*``, of its
        validation examples (``transfer.npz``: per example the probability of the correct class, the
        margin, whether it is correct) and their summary (``transfer.json``: test and validation
        accuracies, costs, the source classes trained on, by id)."""
        return ["transfer.npz", "transfer.json"]

    # -- files
    def influence_files(self, config: dict) -> dict[str, str]:
        """The influence table (per source class), the per-target-class table and their record."""
        d = f"{self.block(config)['source']}/{self.name}"
        return {"table": f"{d}/influence.csv", "by_class": f"{d}/influence_by_class.csv", "meta": f"{d}/influence.json"}

    def influence_inputs(self, config: dict) -> dict[str, list[str]]:
        """What the influence table reads: every subset run's transfer outputs and the source's dataset.json."""
        src = self.block(config)["source"]
        dirs = [self.run_dir(config, src, SUBSETS, s) for s in self.seeds(config, SUBSETS)]
        return {"runs": [f"{d}/transfer.json" for d in dirs], "values": [f"{d}/transfer.npz" for d in dirs],
                "source": [f"{src}/data/dataset.json"]}

    def inputs(self, config: dict, dataset: str, name: str, seed: int) -> dict[str, list[str]]:
        """``target``: the prepared target dataset; ``influence``: the influence table, estimated on the
        target's validation split (a run without the most harmful or helpful classes)."""
        t = self.block(config)["target"]
        out = {"target": [f"{t}/data/data.npz", f"{t}/data/dataset.json"]}
        if self.split(name)[0] in ("harmful", "helpful"):
            files = self.influence_files(config)
            out["influence"] = [files["table"], files["meta"]]
        return out

    def params(self, config: dict, dataset: str, name: str) -> dict:
        """What the stage needs beyond the variant (only what decides this variant's runs, so that a
        change to, say, the counterfactuals' k retrains no subset run)."""
        b = self.block(config)
        kind, k = self.split(name)
        out = {"target": b["target"], "classes": self.num_classes(config), "probe": b["transfer"]["probe"],
               "finetune": b["transfer"]["finetune"]}
        if kind == SUBSETS:
            out.update(fraction=b["fraction"], subset_seed=b["subset_seed"])
        elif kind != FULL:
            out.update(kind=kind, k=k, subset_seed=b["subset_seed"])
        return out

    def targets(self, config: dict, dataset: str) -> list[str]:
        return list(self.influence_files(config).values()) if dataset == self.block(config).get("source") else []

    # -- checks
    def problems(self, config: dict) -> list[str]:
        b = self.block(config)
        if not any(k in b for k in REQUIRED):
            return []
        missing = [k for k in REQUIRED if k not in b]
        if missing:
            return [f"transfer: {', '.join(missing)} missing; a transfer block names its source and target datasets "
                    "and its model (docs/usage.md)"]
        out = [p for p in (no_model("transfer.model", b["model"], config),) if p]
        for key in ("source", "target"):
            if b[key] not in config["datasets"]:
                out.append(unknown(f"transfer.{key}", "dataset", b[key], config["datasets"]))
        if out:
            return out
        src, tgt = config["datasets"][b["source"]], config["datasets"][b["target"]]
        arch = config["models"][b["model"]]["arch"]
        for key, spec in (("source", src), ("target", tgt)):
            if spec["kind"] == "text":
                out.append(f"transfer.{key}: dataset '{b[key]}' is text; transfer here needs inputs that one model "
                           "takes from both datasets (signals or images)")
        if not tgt.get("holdout"):
            out.append(f"transfer.target: dataset '{b['target']}' has no validation split; the influences, and the "
                       "classes the harmful and helpful counterfactuals remove, are estimated on it (never on the test "
                       f"split, which only scores the transfers); set datasets.{b['target']}.holdout (e.g. as many "
                       "examples as the transfers train on: they are taken out of its training split)")
        if out:
            return out
        s_shape, t_shape = input_shape(src), input_shape(tgt)
        if not takes(arch, s_shape, t_shape):
            out.append(f"transfer.target: dataset '{b['target']}' has inputs of shape {t_shape}, which model "
                       f"'{b['model']}' ({arch}) built for the source '{b['source']}' ({s_shape}) cannot take; give "
                       "both datasets one input shape, or use a model that pools over space (resnet*) with the same "
                       "channels")
        out += late_milestones("transfer.train", self.recipe(config, FULL))
        f = b["fraction"]
        if not 0 < f < 1:
            out.append(f"transfer.fraction: {f} lies outside (0, 1); a subset holds this fraction of the source "
                       "classes (the paper: 0.5)")
        c, known = self.num_classes(config), class_count(src)
        if b.get("classes") is not None and known is not None and b["classes"] != known:
            out.append(f"transfer.classes: {b['classes']}, but source '{b['source']}' has {known} classes; set it to "
                       f"{known} or null")
        elif c is None:
            out.append(f"transfer.classes: the number of classes of source '{b['source']}' ({src['kind']}) is known "
                       "only once it is read; set transfer.classes to it")
        if out:
            return out
        ks = b["counterfactual"]["k"]
        if ks and max(ks) >= c:
            out.append(f"transfer.counterfactual.k: {max(ks)} removes {'all' if max(ks) == c else 'more than all'} of "
                       f"the {c} source classes; every k must be below {c}")
        size = inf.subset_size(c, f)
        if size >= c:
            out.append(f"transfer.fraction: {f} of {c} classes rounds to all of them; lower it")
            return out
        none, every = inf.coverage_gaps(inf.subset_masks(c, f, b["subset_seed"], b["subsets"]))
        if none or every:
            which = (f"class(es) {none} in no subset" if none else "") + (" and " if none and every else "") + \
                (f"class(es) {every} in every subset" if every else "")
            out.append(f"transfer.subsets: {b['subsets']} subsets of {size} of the {c} source classes (subset_seed "
                       f"{b['subset_seed']}) leave {which}, whose influence is then undefined; raise transfer.subsets")
        return out


TRANSFER = register(Transfer())
