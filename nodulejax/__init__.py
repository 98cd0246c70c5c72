"""nodulejax: robust lung nodule detection with adversarial augmentation in JAX/Flax.

A reimplementation of Liu et al., "No Surprises: Training Robust Lung Nodule
Detection for Low-Dose CT Scans by Augmenting with Adversarial Attacks", IEEE TMI.
"""

__version__ = "0.1.0"

import warnings as _warnings

# ``python -m nodulejax.evaluation.froc`` (and the other tools inside packages that re-export
# them) runs a module its package already imported; runpy's RuntimeWarning about that would be
# the first line of every such command.
_warnings.filterwarnings("ignore", message=r".*found in sys\.modules after import of package",
                         category=RuntimeWarning)
