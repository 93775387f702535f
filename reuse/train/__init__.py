"""Training: the trainer, its events, schedules and checkpoints."""

from reuse.train.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
from reuse.train.events import Algorithm, Event, State
from reuse.train.schedule import lr_at
from reuse.train.trainer import Trainer, evaluate, make_optimizer, seed_everything

__all__ = ["Algorithm", "Event", "State", "Trainer", "build_from_checkpoint", "evaluate", "load_checkpoint",
           "lr_at", "make_optimizer", "save_checkpoint", "seed_everything"]
