"""nodulejax: robust lung nodule detection with adversarial augmentation in JAX/Flax.

A reimplementation of Liu et al., "No Surprises: Training Robust Lung Nodule
Detection for Low-Dose CT Scans by Augmenting with Adversarial Attacks", IEEE TMI.
"""

__version__ = "0.1.0"
