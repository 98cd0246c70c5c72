"""Train nodulejax models, or run the whole study (the README's main command).

    python train.py --config configs/demo.py --workdir runs/demo            # whole study
    python train.py --config configs/demo.py --workdir runs/demo --config.stage=cg
    python train.py --config configs/experiments.py:beta+syn,demo --workdir runs/demo \
        --config.stage=fpr_augmented --config.fpr.lr=3e-4

Every config field can be overridden from the command line (ml_collections config_flags).
Stages are resumable: a re-run skips finished stages and a killed stage resumes from its last
checkpoint (see nodulejax/study/).
"""

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from nodulejax.errors import NoduleJaxError
from nodulejax.runtime import devices
from nodulejax.study import runner as study

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder: data, checkpoints, logs, report.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep orbax's per-save INFO lines out (-v 0)
    try:
        devices.configure_from(_CONFIG.value)  # before the first JAX computation
        logging.info("JAX devices: %s", jax.devices())
        study.run(_CONFIG.value, _WORKDIR.value)
    except NoduleJaxError as e:  # bad file / field: the message names it, no traceback needed
        raise SystemExit(f"train.py: {type(e).__name__}: {e}") from None


if __name__ == "__main__":
    app.run(main)
