from __future__ import annotations


import pytest
import yaml

from reuse.config import checkpoint_epochs, recipe_for, runs, validate_config
from reuse.methods.registry import get
from reuse.errors import ConfigError
from tests.conftest import ROOT


def load(name):
    return yaml.safe_load((ROOT / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "tests/workflow/config.yaml"])
def test_shipped_configs_are_valid(name):
    validate_config(load(name))


@pytest.mark.parametrize("name", ["configs/cifar10.yaml", "configs/cifar100.yaml", "configs/mnist.yaml",
                                  "configs/text.yaml", "configs/election.yaml"])
def test_real_scale_configs_only_lack_their_data(name):
    """One problem per dataset that reads files (cifar100.yaml: CIFAR-100 and the transfer target
    CIFAR-10), each that its data are not there."""
    cfg = load(name)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    problems = str(e.value).split("\n  - ")[1:]
    assert len(problems) == len(cfg["datasets"]) and all("does not exist" in p for p in problems), str(e.value)


def test_defaults_are_filled_but_model_overrides_stay_partial():
    cfg = validate_config({"datasets": {"d": {"kind": "mnist1d"}},
                           "models": {"m": {"arch": "mlp", "train": {"epochs": 3}}}})
    assert cfg["baseline"]["seeds"] == [0, 1, 2, 3, 4]
    assert cfg["train"]["optimizer"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005,
                                         "nesterov": False, "betas": [0.9, 0.999]}
    assert cfg["models"]["m"]["train"] == {"epochs": 3}
    r = recipe_for(cfg, "m")
    assert r["epochs"] == 3 and r["batch_size"] == 128
    assert checkpoint_epochs(cfg, "m") == [3]
    assert list(runs(cfg)) == [("d", "m")]


def test_kd_variant_train_overrides_only_its_students_recipe():
    base = {"datasets": {"d": {"kind": "mnist1d"}}, "models": {"m": {"arch": "mlp"}}, "train": {"epochs": 10}}
    kd = {"plain": {"model": "m", "teacher": {"model": "m"}},
          "warm": {"model": "m", "teacher": {"model": "m"}, "train": {"schedule": {"warmup_epochs": 3}}}}
    cfg = validate_config({**base, "kd": {"variants": kd}})
    assert "train" not in cfg["kd"]["variants"]["plain"]  # no default: other variants' settings stay as written
    assert get("kd").recipe(cfg, "plain") == recipe_for(cfg, "m")
    r = get("kd").recipe(cfg, "warm")
    assert r["schedule"]["warmup_epochs"] == 3 and r["schedule"]["name"] == recipe_for(cfg, "m")["schedule"]["name"]
    assert r["epochs"] == 10
    bad = {"late": {"model": "m", "teacher": {"model": "m"},
                    "train": {"schedule": {"name": "step", "milestones": [20]}}}}
    with pytest.raises(ConfigError, match=r"kd.variants.late.train.schedule.milestones: \[20\] lie beyond epochs=10"):
        validate_config({**base, "kd": {"variants": bad}})


def test_every_problem_is_reported_with_its_key_path():
    bad = {"datasets": {"d": {"kind": "mnist1dd"}}, "cach": {},
           "models": {"m": {"arch": "mlp", "train": {"epochz": 3, "optimizer": {"lr": "5e-4"}}}},
           "train": {"augment": {"translat": 2}}}
    with pytest.raises(ConfigError) as e:
        validate_config(bad, source="my.yaml")
    msg = str(e.value)
    assert msg.startswith("my.yaml has 5 problems:")
    for line in ["cach: unknown key (did you mean 'cache'?)",
                 "datasets.d.kind: 'mnist1dd' is not one of",
                 "models.m.train.epochz: unknown key (did you mean 'epochs'?)",
                 "models.m.train.optimizer.lr: expected number, got '5e-4' (YAML reads",
                 "train.augment.translat: unknown key (did you mean 'translate'?)"]:
        assert line in msg


def test_semantic_problems(tmp_path):
    bad = {"datasets": {"c": {"kind": "cifar10", "root": str(tmp_path / "none")}},
           "models": {"m": {"arch": "resnet65"}, "n": {"arch": "mlp", "datasets": ["x"],
                                                        "train": {"epochs": 2, "checkpoint_epochs": [3]}}},
           "cache": {"dense": False}}
    with pytest.raises(ConfigError) as e:
        validate_config(bad)
    msg = str(e.value)
    assert "models.m: unknown model arch 'resnet65' (did you mean 'resnet56'?)" in msg
    assert "models.n.datasets: no dataset named 'x'" in msg
    assert "nothing would be cached" in msg
    assert f"{tmp_path / 'none'}/cifar-10-batches-py/data_batch_1 does not exist" in msg


def test_bad_names_are_rejected():
    with pytest.raises(ConfigError, match="not a valid name"):
        validate_config({"datasets": {"a/b": {"kind": "mnist1d"}}, "models": {"m": {"arch": "mlp"}}})


def test_the_retired_bootstrap_block_says_what_replaced_it():
    import copy

    from reuse.config import validate_config
    from reuse.errors import ConfigError
    from tests.helpers import WORKFLOW_CONFIG

    cfg = copy.deepcopy(yaml.safe_load(WORKFLOW_CONFIG.read_text()))
    cfg["report"]["bootstrap"] = {"resamples": 2000}
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert "report.bootstrap: intervals are Student-t intervals" in str(e.value)
    assert "report.confidence" in str(e.value) and "unknown key" not in str(e.value)
