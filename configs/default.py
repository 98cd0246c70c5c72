"""Base config: the paper's architecture and training values (Sections 3-4 of the paper).

Every other config starts from this one and overrides fields:

    config = default.get_config(); config.fpr.patch_size = 32

One sub-block per concern: data, cg, fpr, synth, pgd, pool, train, ckpt, eval, stress.
Units: spacing in mm, HU for intensities before windowing, patch sizes in voxels.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "default"
    c.seed = 0
    # which stage train.py runs: "study" (everything, resumable) or one of
    # cg, fpr_seg_pretrain, fpr, fpr_finetune, synth, fpr_augmented, detect, evaluate, report
    c.stage = "study"

    # --- data ---------------------------------------------------------------------------
    c.data = d = ml_collections.ConfigDict()
    d.kind = "phantom"  # "phantom" (generated under root) or "luna16" (a LUNA16 download)
    d.root = ""  # dataset folder in the LUNA16 layout; "" -> WORKDIR/data
    d.spacing = 0.625  # target isotropic spacing in mm (paper Section 3.1)
    d.hu_window = (-1000.0, 400.0)  # HU mapped to [0, 1]
    d.train_folds = (0, 1, 2, 3, 4, 5, 6, 7)
    d.val_folds = (8,)
    d.test_folds = (9,)
    d.num_workers = 2  # host-side prefetch threads
    d.prefetch = 2  # batches prefetched on the host
    # phantom generator (nodulejax.data.phantom)
    d.phantom = p = ml_collections.ConfigDict()
    p.num_scans = 40
    p.num_subsets = 10
    p.seed = 0
    p.shape_scale = 1.0  # (unused; superseded by size_scale below)
    p.size_scale = 0.6  # 1.0 = adult chest; 0.6 -> body ~200 mm wide; nodules keep real mm sizes
    p.max_voxels = 3_000_000  # per scan; spacing coarsened by one common factor above this

    # --- candidate generation (Section 3.1): ResUNet blob heatmaps + RPN head --------------
    c.cg = g = ml_collections.ConfigDict()
    g.input_size = 128  # training crop, voxels per side (Table 2: 128^3)
    g.width = 8  # filters at the first level
    g.depth = 4  # resolution levels
    g.blob_sigma_mm = 2.5  # std of the same-size Gaussian blob at each centre
    g.loss = "blob_bce"  # heatmap loss: "blob_bce" or "focal" (CenterNet); detection_losses.py
    g.head_prior = 0.1  # initial heatmap probability (head bias -log((1 - pi) / pi))
    g.blob_pos_weight = 50.0  # lambda of blob_bce: voxel weight 1 + lambda * target
    g.anchors_mm = (5.0, 10.0, 20.0, 30.0)  # cube anchor sizes for the RPN head
    g.rpn_width = 32
    g.width_growth = 2.0  # ResUNet channels per level: round(width * width_growth**level)
    g.widths = ()  # explicit ResUNet channels per level; non-empty overrides width/depth/growth
    g.rpn_stride = 2  # RPN head grid stride in input voxels (its first conv is strided)
    g.rpn_pos_iou = 0.5  # anchor matching (nodulejax.boxes.match_anchors)
    g.rpn_neg_iou = 0.2
    g.rpn_num_samples = 256  # anchors per volume in the objectness loss (about)
    g.rpn_pos_fraction = 0.5
    g.rpn_nms_iou = 0.1  # 3D NMS IoU threshold of RPN proposals
    g.rpn_pre_nms = 2000  # top-scoring boxes entering NMS
    g.lr = 1e-3
    g.batch_size = 2
    g.steps = 20000
    g.ggo_steps = 5000
    g.rpn_steps = 5000
    g.num_candidates = 100  # K candidates per scan after NMS (Section 5.2)
    g.nms_radius_mm = 5.0
    g.window_overlap = 0.25  # sliding-window overlap fraction for whole-scan inference
    g.window_size = 0  # sliding-window side in voxels (0 -> input_size)
    g.blend = "gaussian"  # window blending weights: "gaussian" (sigma = side/8) or "linear"
    g.infer_batch_size = 2  # windows per forward pass in whole-scan inference
    g.roi_margin_mm = 10.0  # search the lung mask dilated by this (< 0: the whole volume)
    g.rpn_candidates = 20  # RPN boxes per scan (after NMS) offered to the union
    g.rpn_iou = 0.1  # RPN box NMS IoU threshold
    g.ggo_types = ("ground-glass", "part-solid")  # nodule types of the GGO fine-tune

    # --- false-positive reduction (Section 3.1): DenseUNet + CE or Beta head ----------------
    c.fpr = f = ml_collections.ConfigDict()
    f.patch_size = 64  # voxels per side at data.spacing (paper: 64^3 at 0.625 mm)
    # paper size (models/denseunet.py): 450.1k params (Table 2: 455.98k, -1.3%) and
    # 17.17 GMACs at 64^3 (Table 2: 17.24, -0.4%), exact per-layer count (layers.count_macs)
    f.growth = (14, 14, 14, 14)  # dense growth rate, one per level (a tuple; len = levels)
    f.block_layers = (1, 2, 3, 3)  # conv layers per dense block, one per level; last = bottleneck
    f.init_features = 28
    f.compression = 0.5  # channel factor of the down transitions (DenseNet-BC theta)
    f.cls_hidden = 32  # hidden width of the shallow classifier head
    f.norm_groups = 4  # max GroupNorm groups (no batch statistics: pure apply, see denseunet)
    f.up_mode = "nearest"  # "nearest" | "trilinear" | "resize_conv" | "shuffle"
    f.pos_fraction = 0.5  # positives per batch (paper Section 3.3: 50% / 50%)
    f.head = "beta"  # "ce" (sigmoid + BCE) or "beta" (evidential Beta head)
    f.kl_anneal_steps = 1000  # steps over which the Beta KL weight ramps 0 -> 1
    f.lr = 1e-3
    f.batch_size = 16
    f.steps = 20000
    f.finetune_steps = 5000
    f.seg_pretrain_steps = 2000
    f.eval_every = 500
    f.early_stop_patience = 5  # evaluations without improvement before stopping
    f.augment = True  # flips and 90-degree rotations (+ translations of up to jitter_vox)
    f.jitter_vox = 2  # random shift of training patches, voxels per axis
    f.init_from = ""  # stage whose checkpoint initialises this one ("" -> from scratch)

    # --- synthesizer (Section 3.2): VAE + WGAN-GP critic ------------------------------------
    c.synth = s = ml_collections.ConfigDict()
    s.patch_size = 32  # context-free nodule patch, voxels per side
    s.latent_dim = 32
    s.width = 16
    s.lambda_kl = 1e-5  # lambda_1 of Eq. 6
    s.lambda_adv = 0.1  # lambda_2 of Eq. 6
    s.gp_weight = 10.0  # WGAN-GP gradient penalty weight (Gulrajani et al.)
    s.n_critic = 5
    s.lr = 1e-4
    s.batch_size = 16
    s.steps = 20000
    s.mask_threshold = 0.1  # fusion mask: synthetic voxel > threshold (in [0,1] intensity)
    s.max_width = 128  # channel cap of the VAE / critic levels (width * 2^level)
    s.critic_width = 16  # first-level width of the spectrally normalised critic
    s.sn_power_iterations = 8  # Gram-matrix squarings per spectral-norm estimate (critic.py)
    s.min_diameter_mm = 6.0  # synthetic nodules smaller than this are filtered out

    # --- PGD (Sections 3.2-3.3) --------------------------------------------------------------
    c.pgd = q = ml_collections.ConfigDict()
    q.latent_eps = 0.15
    q.latent_step = 0.05
    q.latent_steps = 20
    q.image_eps = 0.03  # L-inf radius on [0,1] intensities for attacks 2-4
    q.image_step = 0.01
    q.image_steps = 20
    q.noise_eps = 0.3  # radius around a uniform-noise start (attack 3)
    q.noise_step = 0.05  # PGD step for attack 3 (20 steps can cross the 0.3 ball)
    q.latent_norm = "linf"  # ball of the latent search (paper: ||delta|| <= eps, unspecified)
    q.image_norm = "linf"  # ball of the image-space attacks 2-4
    q.batch_size = 16

    # --- augmentation pool (Section 4) ---------------------------------------------------------
    c.pool = o = ml_collections.ConfigDict()
    o.background_per_scan = 10
    o.syn_random_per_background = 6
    o.syn_pgd_per_background = 6
    o.perturb_per_positive = 1
    o.num_noise = 100000
    o.shard_size = 1024
    o.max_tries = 8  # latent draws per synthetic item to find one >= synth.min_diameter_mm
    o.kl_weight = 1.0  # Beta-loss KL weight of the attack objective (end of annealing)

    # --- augmented fine-tuning (Section 3.3) ----------------------------------------------------
    c.train = t = ml_collections.ConfigDict()
    t.experiment = "baseline-beta-finetune"  # a Table 3 row (configs/experiments.py)
    t.pos_ratios = (0.5, 0.25, 0.25)  # real / synthetic / adversarial positives
    t.neg_ratios = (0.5, 0.5)  # real / adversarial negatives
    t.syn = "none"  # "none" | "random" | "pgd"
    t.perturb = False
    t.poisson = False
    t.poisson_scales = (50.0, 5.0)  # Poisson-noise rescale factors (Section 5.3.2: x50, x5)
    t.aug_source = "pool"  # "pool" (attack.py pool) or "inloop" (PGD inside the train step)
    t.inloop_target = "frozen"  # "frozen" baseline or "current" model for in-loop PGD
    t.log_every = 50
    t.multi_host = False  # call jax.distributed.initialize()
    t.rows = ()  # Table 3 rows the study trains/evaluates (empty: all; baselines always)
    t.progress = True  # tqdm progress bar (throughput, ETA); logs are written either way

    # --- checkpoints ----------------------------------------------------------------------------
    c.ckpt = k = ml_collections.ConfigDict()
    k.keep = 3
    k.every = 500
    k.async_save = True  # orbax writes in the background (arrays copied off-device first)

    # --- evaluation and stress tests ---------------------------------------------------------
    c.eval = e = ml_collections.ConfigDict()
    e.bootstrap = 1000
    e.fps = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    c.stress = r = ml_collections.ConfigDict()
    r.num_synthetic = 10000
    r.negatives_per_scan = 10
    r.uniform_levels = (0.0, 0.3, 0.6, 0.9)
    r.poisson_scales = (50.0, 5.0)
    r.num_noise = 0  # Table 6 noise patches; 0 -> as many as the negative patches
    r.attack_target = "fpr_baseline-beta-finetune"  # model attacked for Table 4 / PGD negatives
    r.noise_target = "self"  # Table 5 Adv. / Table 6 PGD noise: "self" or a model name
    r.seed = 1  # stress-test draws (backgrounds, latent codes, noise), apart from c.seed

    # --- two-moons toy experiment (Section 5.1, Fig. 7) -------------------------------------------
    c.toy = y = ml_collections.ConfigDict()
    y.mlp_steps = 1500
    y.vae_steps = 2000

    # --- runtime ------------------------------------------------------------------------------
    c.runtime = u = ml_collections.ConfigDict()
    u.conv_impl = "auto"  # "auto" | "xla3d" | "2d" | "2dcat": 3D conv lowering (models/layers.py;
    #   auto = 2dcat on CPU, xla3d on GPU/TPU)
    u.dtype = "float32"  # compute dtype ("bfloat16" on GPU)
    u.cpu_devices = "auto"  # XLA host CPU devices: "auto" = one per core (nodulejax/devices.py);
    #   batches (PGD, training) are split over them; 1 = JAX's single CPU device
    return c
