"""nodulejax: robust lung nodule detection with adversarial augmentation in JAX/Flax.

A reimplementation of Liu et al., "No Surprises: Training Robust Lung Nodule
Detection for Low-Dose CT Scans by Augmenting with Adversarial Attacks", IEEE TMI.

Package ``__init__`` files hold only their docstring: every name has one import path, its
module's (``from nodulejax.evaluation.froc import evaluate``), and importing a package loads
nothing else.
"""

__version__ = "0.1.0"
