"""Packages whose public names load on first use (PEP 562).

A package ``__init__`` that imports its submodules eagerly makes importing any one of them import
all of them (and torch): the config check, which needs a method's ``spec`` or the model catalog,
would pay for the training code. Such a package instead declares where each name lives::

    __all__ = ["Distill", "mix"]
    __getattr__, __dir__ = exports(__name__, {"reuse.methods.kd.algorithm": ["Distill"],
                                              "reuse.methods.kd.functional": ["mix"]})

and ``from reuse.methods.kd import Distill`` imports ``algorithm`` then, and only then.

A name may also be that of the submodule defining it (``reuse.report.build``, the module, defines
``build``, the function). An eager ``__init__`` made the package attribute the function once and for
all; lazily, the import system would set it to the submodule whenever the submodule is first imported
(``from reuse.report.build import Options``), and ``from reuse.report import build`` would then give
the module. The package therefore keeps such a name for the exported object.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Callable, Iterable, Mapping


def exports(package: str, modules: Mapping[str, Iterable[str]]) -> tuple[Callable[[str], object], Callable[[], list]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package`` whose names are those of
    ``modules`` (module name -> names it defines); a name is imported on first access, then cached."""
    where = {name: mod for mod, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    # names that are also their module's name: the import system's binding of the submodule is ignored
    shadowed = {name for name, mod in where.items() if mod == f"{package}.{name}"}
    if shadowed:
        class Package(types.ModuleType):
            def __setattr__(self, name: str, value: object) -> None:
                if name in shadowed and isinstance(value, types.ModuleType):
                    return
                super().__setattr__(name, value)

        sys.modules[package].__class__ = Package
    return __getattr__, __dir__


__all__ = ["exports"]
