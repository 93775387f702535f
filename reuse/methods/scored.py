"""What the methods that read the dataset's score table share (prune, curriculum, reweight, and any
later method that orders or weighs examples by past runs' difficulty scores): their variants, the
files a run reads, their config checks and their study. A base for their specs, not a method."""

from __future__ import annotations

from reuse.methods.registry import Method, Study
from reuse.plan import datasets_of, no_model, run_path, score_datasets, score_epochs, score_seeds


def needs_scores(variant: dict) -> bool:
    """Whether a variant reads the score table (random choices do not)."""
    return variant.get("mode") != "random" and variant.get("order") != "random"


class ScoredMethod(Method):
    """A method whose variants pick a ``score`` (and its checkpoint ``epoch``) from the score table."""

    #: the settings a study row groups by (besides the model and variant), as summary columns
    study_keys: tuple[str, ...] = ()

    @property
    def studies(self) -> tuple[Study, ...]:  # type: ignore[override]
        keys = ["model", *self.study_keys]
        return (Study(self.name, (self.name,), "reuse.workflow:variant_study", params=lambda config: {"keys": keys}),)

    def variants(self, config: dict):
        scored = set(score_datasets(config))
        for name, v in self.block(config).get("variants", {}).items():
            if v["model"] not in config["models"]:
                continue
            for ds in datasets_of(config, v, v["model"]):
                if ds in scored or not needs_scores(v):
                    yield ds, name

    def score_epoch(self, config: dict, name: str) -> int | None:
        """The scored epoch a variant reads (``last`` resolved), or None without scores."""
        v = self.variant(config, name)
        if not needs_scores(v) or config["scores"]["model"] is None:
            return None
        return score_epochs(config)[-1] if v["epoch"] == "last" else v["epoch"]

    def inputs(self, config: dict, dataset: str, name: str, seed: int) -> dict[str, list[str]]:
        """``scores``: the dataset's score table; ``past_runs``: the run.json of each scored past run."""
        if not needs_scores(self.variant(config, name)):
            return {"scores": [], "past_runs": []}
        model = config["scores"]["model"]
        return {"scores": [f"{dataset}/scores.parquet"],
                "past_runs": [f"{run_path(dataset, model, seed=s)}/run.json" for s in score_seeds(config)]}

    def params(self, config: dict, dataset: str, name: str) -> dict:
        return {"score_epoch": self.score_epoch(config, name)}

    def problems(self, config: dict) -> list[str]:
        problems = []
        sc = config["scores"]
        for name, v in self.block(config).get("variants", {}).items():
            where = f"{self.name}.variants.{name}"
            bad = no_model(f"{where}.model", v["model"], config)
            if bad:
                problems.append(bad)
            if not needs_scores(v):
                continue
            if v["score"] is None:
                problems.append(f"{where}.score: this variant orders examples by a score; name one of {sc['names']}")
            elif sc["model"] is None:
                problems.append(f"{where}: uses score '{v['score']}' but scores.model is not set; set it to the past "
                                "runs' model whose checkpoints are scored")
            elif sc["model"] not in config["models"]:
                continue  # reported under scores.model
            elif v["score"] not in sc["names"]:
                problems.append(f"{where}.score: '{v['score']}' is not computed; add it to scores.names {sc['names']}")
            elif v["epoch"] != "last" and v["epoch"] not in score_epochs(config):
                problems.append(f"{where}.epoch: {v['epoch']} is not a scored epoch {score_epochs(config)}; add it "
                                "to scores.epochs or use last")
        return problems
