"""Smallest config that runs every stage: the tests and CI's smoke run use it."""

from configs import demo


def get_config():
    c = demo.get_config()
    c.name = "tiny"
    c.data.phantom.num_scans = 10
    c.data.phantom.size_scale = 0.4
    c.data.phantom.nodules_per_scan = 0.0  # the built-in density (the demo raises it)
    c.data.spacing = 2.0
    c.data.train_folds = (0, 1, 2, 3, 4, 5, 6)
    c.data.val_folds = (7,)
    c.data.test_folds = (8, 9)

    c.cg.input_size = 16
    c.cg.width = 2
    c.cg.depth = 2
    c.cg.steps = 4
    c.cg.ggo_steps = 2
    c.cg.rpn_steps = 2
    c.cg.num_candidates = 20

    c.fpr.patch_size = 16
    c.fpr.growth = (2, 2)
    c.fpr.block_layers = (1, 1)
    c.fpr.init_features = 4
    c.fpr.batch_size = 4
    c.fpr.steps = 4
    c.fpr.finetune_steps = 2
    c.fpr.seg_pretrain_steps = 2
    c.fpr.eval_every = 2

    c.synth.patch_size = 8
    c.synth.latent_dim = 4
    c.synth.width = 2
    c.synth.steps = 2
    c.synth.n_critic = 1
    c.synth.batch_size = 4

    c.pgd.latent_steps = 2
    c.pgd.image_steps = 2
    c.pgd.noise_steps = 2
    c.pgd.batch_size = 4

    c.pool.background_per_scan = 1
    c.pool.syn_random_per_background = 1
    c.pool.syn_pgd_per_background = 1
    c.pool.num_noise = 8
    c.pool.shard_size = 4

    c.stress.num_synthetic = 8
    c.synth.diameter_rim_mm = 0.0  # the 2-step synthesizer's samples: keep the mask diameter
    c.stress.negatives_per_scan = 1
    c.stress.num_noise = 0  # as many noise patches as negatives
    c.stress.curve_eps = (0.0, 0.03, 0.15)
    c.stress.curve_patches = 4
    c.eval.min_diameter_mm = 0.0  # every included nodule (the smoke test counts them all)
    c.eval.bootstrap = 10
    c.ckpt.every = 2
    c.toy.mlp_steps = 50
    c.toy.vae_steps = 50
    c.train.rows = ("beta+syn", "beta+perturb")
    c.train.finetune_seeds = 2  # the seed-replica path of the claims (one more fine-tune each)
    return c
