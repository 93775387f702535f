"""The tasks of an interleaving run: named groups of the dataset's classes (no torch).

A task classifies the examples of its classes among those classes only (task-aware: its head has one
output per class of its group). Tasks hold disjoint classes, so every example belongs to at most one
task. ``interleave.tasks`` lists the groups, or names a preset:

- ``cifar100_superclasses``: CIFAR-100's 20 superclasses (Krizhevsky 2009), each the 5 fine classes
  it groups, by fine-label id (the alphabetical order of the dataset's ``fine_label_names``).
"""

from __future__ import annotations

# The superclass of each CIFAR-100 fine label, by fine-label id (the dataset's `coarse_labels`).
CIFAR100_COARSE = (4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13, 15, 3,
                   15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0,
                   17, 4, 18, 17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13, 16, 19, 2,
                   4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13)
CIFAR100_SUPERCLASSES = ("aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
                         "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
                         "large_man_made_outdoor_things", "large_natural_outdoor_scenes",
                         "large_omnivores_and_herbivores", "medium_mammals", "non_insect_invertebrates", "people",
                         "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2")

PRESETS: dict[str, dict[str, list[int]]] = {
    "cifar100_superclasses": {name: [f for f, c in enumerate(CIFAR100_COARSE) if c == i]
                              for i, name in enumerate(CIFAR100_SUPERCLASSES)},
}

# Classes of the dataset kinds whose count is fixed (the config check compares task classes with it).
KIND_CLASSES = {"mnist1d": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}


def resolve(tasks: dict | str) -> dict[str, list[int]]:
    """The tasks by name, in order, each its list of classes (a preset's name resolved)."""
    if isinstance(tasks, str):
        return {k: list(v) for k, v in PRESETS[tasks].items()}
    return {k: list(v) for k, v in tasks.items()}


def problems(where: str, tasks: dict | str, kinds: dict[str, str]) -> list[str]:
    """What is wrong with ``tasks`` on datasets of ``kinds`` (by dataset name): overlapping classes,
    classes the dataset does not have."""
    if isinstance(tasks, str):
        if tasks not in PRESETS:
            return [f"{where}: no preset named '{tasks}' (have {', '.join(PRESETS)}); or list the tasks' classes"]
        where = f"{where} ({tasks})"
    out, owner = [], {}
    for name, classes in resolve(tasks).items():
        for c in classes:
            if c in owner:
                out.append(f"{where}.{name}: class {c} is also in task '{owner[c]}'; tasks hold disjoint classes")
            owner.setdefault(c, name)
    top = max(owner, default=-1)
    for ds, kind in kinds.items():
        n = KIND_CLASSES.get(kind)
        if n is not None and top >= n:
            bad = next(name for name, cl in resolve(tasks).items() if top in cl)
            out.append(f"{where}.{bad}: class {top} does not exist on dataset '{ds}' ({kind}, classes 0..{n - 1}); "
                       "list classes of the dataset or set interleave.datasets")
    return out
