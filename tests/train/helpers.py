"""What the FPR trainer tests share (test_fpr.py, test_augment.py): configs/tiny.py made
short and deterministic for them."""

from configs import tiny


def fpr_test_config():
    """configs/tiny.py with a fixed batch (no augmentation), a constant Beta objective and a
    few steps of each FPR stage."""
    c = tiny.get_config()
    c.train.log_every = 1
    c.train.progress = False
    c.ckpt.every = 100
    c.fpr.augment = False  # fixed batch: the loss must fall
    c.fpr.kl_anneal_steps = 0  # constant Beta objective (KL weight 1)
    c.fpr.steps = 4
    c.fpr.finetune_steps = 3
    c.fpr.seg_pretrain_steps = 3
    c.fpr.eval_every = 2
    return c
