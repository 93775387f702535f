"""Adversarial recycling: adversarial examples generated once against past runs, reused to train new
runs (see README.md in this folder for the method card)."""

from reuse.methods.adversarial.attacks import (KINDS, NORMS, MeanLogits, attack, fgsm, input_bounds, pgd, project,
                                               robust_eval)
from reuse.methods.adversarial.cache import AdvCache, write_adv_cache
from reuse.methods.adversarial.recycle import (USES, AdversarialTraining, AuxBatchNorm, batchnorm_layers, mix_batch,
                                               mix_positions, mixup_batch, sample_lambda)

__all__ = ["KINDS", "NORMS", "USES", "AdvCache", "AdversarialTraining", "AuxBatchNorm", "MeanLogits", "attack",
           "batchnorm_layers", "fgsm", "input_bounds", "mix_batch", "mix_positions", "mixup_batch", "pgd", "project",
           "robust_eval", "sample_lambda", "write_adv_cache"]
