"""Sequences of runs (see README.md in this folder for the method card): a hyperparameter search and
retraining on arriving data, where each run may reuse the runs before it. Specs in ``spec.py``,
the search space in ``space.py``, Optuna in ``search.py``, stages in ``stage.py``."""
