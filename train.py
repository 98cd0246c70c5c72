"""Train nodulejax models, or run the whole study (the README's main command).

    python train.py --config configs/demo.py --workdir runs/demo            # whole study
    python train.py --config configs/demo.py --workdir runs/demo --config.stage=cg
    python train.py --config configs/experiments.py:beta+syn,demo --workdir runs/demo \
        --config.stage=fpr_augmented --config.fpr.lr=3e-4
    python train.py --config configs/demo.py --workdir runs/demo --config.rerun=fpr

Every config field can be overridden from the command line (ml_collections config_flags).
Stages are resumable: a re-run skips finished stages whose config fields are unchanged,
refuses (naming the fields) when they changed, and redoes the stages named in
--config.rerun and everything downstream; a killed stage resumes from its last checkpoint.
"""

import sys

from absl import flags

from nodulejax.runtime.cli import run_main
from nodulejax.study import runner, stages

_DOC = (__doc__ + "\nStages of the study, in order (--config.stage=NAME runs one): "
        + ", ".join(stages.STUDY_STAGES) + "; one model: fpr_seg_pretrain (segmentation "
        "pretraining), fpr_finetune and fpr_augmented (the Table 3 row of "
        "--config configs/experiments.py:ROW).")


def define(fv):
    flags.DEFINE_string("workdir", None, "run folder: data, checkpoints, logs, eval, report",
                        flag_values=fv)
    return ["workdir"]


def main(fv):
    runner.run(fv["config"].value, fv["workdir"].value)


if __name__ == "__main__":
    sys.exit(run_main("train.py", define, main, doc=_DOC))
