"""The torch-free model catalog (reuse.models.catalog) equals the registry the model modules fill."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reuse.errors import ConfigError
from reuse.models import catalog


def test_catalog_equals_the_registry():
    from reuse.models.build import MODELS, arguments

    assert list(catalog.archs()) == list(MODELS)  # names, in registration order
    assert catalog.archs() == {name: arguments(name) for name in MODELS}
    for name, fn in MODELS.items():
        assert fn.__module__ == f"reuse.models.{catalog.arch_module(name)}"
    assert set(catalog.TEXT_MODELS) == {n for n, fn in MODELS.items() if fn.__module__ == "reuse.models.text"}


def test_the_package_names_still_resolve():
    import reuse.models as models
    from reuse.models import build, registry

    assert models.MODELS is registry.MODELS is build.MODELS
    assert models.build_model is build.build_model and models.check_arch is catalog.check_arch
    assert models.register_model is registry.register_model
    with pytest.raises(AttributeError):
        models.no_such_name  # noqa: B018


def test_check_arch_messages_match_build_model():
    from reuse.models import build_model

    for arch, args in (("resnet65", {}), ("mlp", {"hiden": [3]}), ("zzz", {}), ("text_cnn", {"vocab": 3})):
        with pytest.raises(ConfigError) as built:
            build_model(arch, (1, 40), 10, **args)
        with pytest.raises(ConfigError) as checked:
            catalog.check_arch(arch, args)
        assert str(checked.value) == str(built.value)
    catalog.check_arch("resnet20", {"width": 8, "shortcut": "B"})


def test_the_catalog_imports_no_torch():
    code = ("import sys; from reuse.models import check_arch; from reuse.models.catalog import TEXT_MODELS, model_vocab; "
            "check_arch('text_cnn', {'vocab_size': 9}); assert model_vocab('text_cnn', {}) == 8000; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr


def test_the_catalog_refuses_a_computed_name(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f(d):\n    @register_model(f'net{d}')\n    def g(input_shape, num_classes):\n        pass\n")
    with pytest.raises(SyntaxError, match="one literal name"):
        catalog.read_module(src)
    src.write_text("register_model('x')(lambda input_shape, num_classes: None)\n")
    with pytest.raises(SyntaxError, match="must decorate a function"):
        catalog.read_module(src)
