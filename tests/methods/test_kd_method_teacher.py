"""KD teachers from a method's runs (``teacher: {model, method, variant}``): which runs and caches a
student reads, the cache rule's place in the plan, and the config mistakes."""

from __future__ import annotations

import pytest

from reuse.config import validate_config
from reuse.errors import ConfigError
from reuse.methods import registry
from tests.methods.settings import BASE


def _cfg(**teacher) -> dict:
    import copy

    cfg = copy.deepcopy(BASE)
    cfg["prune"] = {"seeds": [0, 1, 2], "variants": {"half": {"model": "m", "mode": "random", "keep": 0.5}}}
    cfg["kd"] = {"variants": {"from_prune": {"model": "m", "teacher": {"model": "m", **teacher}}}}
    cfg["scores"] = {"model": None}
    return cfg


def test_a_method_teacher_reads_the_caches_of_that_variants_final_checkpoints():
    cfg = validate_config(_cfg(method="prune", variant="half", runs=2), source="test")
    kd = registry.get("kd", cfg)
    assert list(kd.variants(cfg)) == [("d", "from_prune")]
    assert kd.teacher_seeds(cfg, "from_prune", 0) == [1, 2]  # prune's seeds that follow 0, not the baseline's
    files = kd.inputs(cfg, "d", "from_prune", 0)["teachers"]
    assert files[:2] == ["d/m/prune/half/s1/run.json", "d/m/prune/half/s2/run.json"]
    assert "d/m/prune/half/s1/logits/final/logits.npy" in files and "d/m/prune/half/s2/logits/final/meta.json" in files
    assert kd.params(cfg, "d", "from_prune")["teacher_caches"] == ["logits/final"]
    assert kd.method_teachers(cfg) == [("d", "prune", "half")]
    base = validate_config(_cfg(), source="test")  # a baseline teacher reads logits/e<last> as before
    assert registry.get("kd", base).params(base, "d", "from_prune")["teacher_caches"] == ["logits/e3"]
    assert registry.get("kd", base).inputs(base, "d", "from_prune", 0)["teachers"][0] == "d/m/baseline/s1/run.json"


@pytest.mark.parametrize("teacher, problem", [
    ({"method": "prun", "variant": "half"}, "kd.variants.from_prune.teacher.method: no method whose runs can teach "
                                            "named 'prun' (did you mean 'prune'?)"),
    ({"method": "prune"}, "kd.variants.from_prune.teacher.variant: a prune run is named by its variant; set it to one "
                          "of half"),
    ({"method": "prune", "variant": "halff"}, "kd.variants.from_prune.teacher.variant: no prune variant named 'halff'"),
    ({"method": "prune", "variant": "half", "runs": 4}, "kd.variants.from_prune.teacher.runs: 4 past runs asked for, "
                                                        "but prune variant 'half' has 3 seeds"),
    ({"method": "prune", "variant": "half", "epoch": 1}, "kd.variants.from_prune: a prune run teaches through the "
                                                         "logit cache of its final checkpoint only"),
    ({"method": "kd", "variant": "from_prune"}, "kd.variants.from_prune.teacher: the variant cannot teach itself"),
    ({"variant": "half"}, "kd.variants.from_prune.teacher.variant: a baseline run has no variant"),
])
def test_method_teacher_mistakes(teacher, problem):
    with pytest.raises(ConfigError) as e:
        validate_config(_cfg(**teacher), source="test")
    assert problem in str(e.value)


def test_the_teacher_model_must_be_the_one_the_variant_trains():
    cfg = _cfg(method="prune", variant="half")
    cfg["kd"]["variants"]["from_prune"]["teacher"]["model"] = "c"
    with pytest.raises(ConfigError, match="kd.variants.from_prune.teacher.model: prune variant 'half' trains 'm', "
                                          "not 'c'"):
        validate_config(cfg, source="test")
