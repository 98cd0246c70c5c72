"""The adversarial machinery of Sections 3.2-3.3: the PGD engine, fusion, the attacks, the
noises, synthetic nodules with the diameter filter, and the precomputed pool."""

from __future__ import annotations

from nodulejax.adversarial import attacks, fusion, noise, pgd, pool, synthetic
from nodulejax.adversarial.attacks import (
           AttackResult,
           SynthResult,
           adversarial_noise,
           center_fit,
           fpr_probabilities,
           perturb_negatives,
           perturb_patches,
           perturb_positives,
           synthesize_nodules,
)
from nodulejax.adversarial.fusion import fuse, fusion_mask, paste_center
from nodulejax.adversarial.noise import (
           poisson_icdf,
           poisson_kmax,
           poisson_noise,
           poisson_scaled,
           uniform_noise,
           uniform_noise_patches,
)
from nodulejax.adversarial.pgd import per_example_keys, pgd_with_losses
from nodulejax.adversarial.synthetic import (
           diameter_of_voxels,
           diameter_ok,
           nodule_diameter_mm,
           synthesize_filtered,
)

__all__ = ["fusion", "fusion_mask", "fuse", "paste_center", "pgd", "pgd_with_losses",
           "per_example_keys", "noise", "uniform_noise_patches", "uniform_noise", "poisson_noise",
           "poisson_scaled", "poisson_icdf", "poisson_kmax", "attacks", "AttackResult",
           "SynthResult", "fpr_probabilities", "synthesize_nodules", "perturb_patches",
           "perturb_positives", "perturb_negatives", "adversarial_noise", "center_fit",
           "synthetic", "synthesize_filtered", "nodule_diameter_mm", "diameter_ok",
           "diameter_of_voxels", "pool"]
