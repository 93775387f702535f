"""Interleaving learning (Ban & Xie 2021): tasks take turns training a shared encoder, against
blocked, joint and independent training at the same steps (see README.md in this folder for the
method card).

The names below load on first use (:mod:`reuse.lazy`), so importing ``reuse.methods.interleave.spec``
(the config check) imports no torch.
"""

from reuse.lazy import exports

__all__ = ["InterleavedRun", "MultiTaskNet", "Task", "Turn", "build_net", "evaluate_tasks", "forgetting",
           "make_tasks", "stream_batch", "turns"]
__getattr__, __dir__ = exports(__name__, {
    "reuse.methods.interleave.interleave": ["InterleavedRun", "MultiTaskNet", "Task", "build_net", "evaluate_tasks",
                                            "make_tasks", "stream_batch"],
    "reuse.methods.interleave.schedule": ["Turn", "forgetting", "turns"],
})
