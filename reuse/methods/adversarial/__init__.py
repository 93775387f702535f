"""Adversarial recycling: adversarial examples generated once against past runs, reused to train new
runs (see README.md in this folder for the method card).

The names below load on first use (:mod:`reuse.lazy`), so importing ``reuse.methods.adversarial.spec``
(the config check) imports no torch.
"""

from reuse.lazy import exports

__all__ = ["KINDS", "NORMS", "USES", "AdvCache", "AdversarialTraining", "AuxBatchNorm", "MeanLogits",
           "attack", "batchnorm_layers", "fgsm", "input_bounds", "mix_batch", "mix_positions",
           "mixup_batch", "pgd", "project", "robust_eval", "sample_lambda", "write_adv_cache"]
__getattr__, __dir__ = exports(__name__, {
    "reuse.methods.adversarial.attacks": ["KINDS", "NORMS", "MeanLogits", "attack", "fgsm", "input_bounds",
                                          "pgd", "project", "robust_eval"],
    "reuse.methods.adversarial.cache": ["AdvCache", "write_adv_cache"],
    "reuse.methods.adversarial.recycle": ["USES", "AdversarialTraining", "AuxBatchNorm", "batchnorm_layers",
                                          "mix_batch", "mix_positions", "mixup_batch", "sample_lambda"],
})
