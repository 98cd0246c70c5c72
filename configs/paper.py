"""Paper-scale config (Sections 3-4, Table 2): the base config with the paper's sizes.

Candidate generator widths are chosen so the parameter counts and MACs land near Table 2
(`python -m nodulejax.models.summary --config configs/paper.py`):
* ResUNet: 4 levels of (16, 16, 20, 20) channels -> 141.7k params (paper 143.92k),
  71.6 GMACs at 128^3 (paper 67.15). The paper gives only totals; a doubling-width U-Net
  cannot reach its MACs-per-parameter ratio (~4.7e5 MACs/param), so channels grow slowly.
* RPN = backbone + head (Table 2's 276.93k minus the ResUNet's 143.92k leaves ~133k for the
  head): stride-2 3x3x3 conv 16->64, 3x3x3 conv 64->64, 1x1 objectness (4 anchors) and deltas
  -> 281.6k params, 108.2 GMACs at 128^3 (paper 113.91; its "129x128x128" input is read as a typo).
The FPR (c.fpr) numbers belong to the DenseUNet3D owner's fields of the base config.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.name = "paper"
    c.data.spacing = 0.625  # mm, Section 3.1

    c.cg.input_size = 128  # Table 2
    c.cg.widths = (16, 16, 20, 20)
    c.cg.width = 16
    c.cg.depth = 4
    c.cg.rpn_width = 64
    c.cg.rpn_stride = 2
    c.cg.anchors_mm = (5.0, 10.0, 20.0, 30.0)

    c.fpr.patch_size = 64  # 64^3 at 0.625 mm (Section 3.1)
    # whole-scan inference in small batches (2-core CPU): one FPR forward pass at 64^3 takes
    # 9.0 GB and 1.67 s a patch at batch 16, 2.5 GB and 1.28 s at batch 4; a CG network on
    # 128^3 windows (default.py's widths) 1.2 GB at batch 1, 2.2 GB at 2. One full-size
    # scan: 15-18 min, 4.3 GB (benchmarks/detect_scan.py, benchmarks/RESULTS.md)
    c.fpr.infer_batch_size = 4
    c.cg.infer_batch_size = 1
    c.fpr.lr = 1e-3  # Adam, initial learning rate 0.001 (Section 3.1)
    c.cg.lr = 1e-3

    c.pgd.latent_eps = 0.15  # Section 4
    c.pgd.latent_step = 0.05
    c.pgd.latent_steps = 20
    # the image attacks (Eq. 11) reuse the symbols of Eq. 9: eps 0.15, step 0.05, 20 steps
    c.pgd.image_eps = 0.15
    c.pgd.image_step = 0.05
    c.pgd.image_steps = 20
    c.pgd.noise_eps = 0.15
    c.pgd.noise_step = 0.05
    c.pgd.noise_steps = 20
    c.eval.min_diameter_mm = 6.0  # Section 4
    c.stress.min_diameter_mm = 6.0  # Section 5.3.1
    c.synth.min_diameter_mm = 6.0
    c.synth.train_min_diameter_mm = 0.0  # the paper filters outputs, not training inputs

    # pool sizes of Section 4: 10 background patches per training scan, the synthesizer
    # sampled six times per background with random and with PGD sampling
    c.pool.background_per_scan = 10
    c.pool.syn_random_per_background = 6
    c.pool.syn_pgd_per_background = 6
    c.train.pos_ratios = (0.5, 0.25, 0.25)  # Section 4 fine-tuning ratios
    c.train.neg_ratios = (0.5, 0.5)
    return c
