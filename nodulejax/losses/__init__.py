"""Pure loss functions: FPR (CE / Beta), synthesizer (VAE + WGAN-GP), detection (heatmaps,
RPN) and segmentation."""

from __future__ import annotations

from nodulejax.losses import detection, fpr, segmentation, synth
from nodulejax.losses.detection import (
           heatmap_blob_bce_loss,
           heatmap_focal_loss,
           heatmap_loss,
           heatmap_target,
           rpn_loss,
           rpn_targets,
           sample_anchors,
           smooth_l1,
)
from nodulejax.losses.fpr import bce_loss, beta_kl_uniform, beta_loss, fpr_loss, kl_anneal
from nodulejax.losses.segmentation import seg_loss
from nodulejax.losses.synth import (
           gradient_penalty,
           l1_recon,
           synth_generator_loss,
           vae_kl,
           wgan_generator_loss,
           wgan_gp_critic_loss,
)

__all__ = ["detection", "heatmap_target", "heatmap_focal_loss", "heatmap_blob_bce_loss",
           "heatmap_loss", "smooth_l1", "rpn_targets", "sample_anchors", "rpn_loss", "fpr",
           "bce_loss", "beta_kl_uniform", "beta_loss", "kl_anneal", "fpr_loss", "segmentation",
           "seg_loss", "synth", "vae_kl", "l1_recon", "gradient_penalty", "wgan_gp_critic_loss",
           "wgan_generator_loss", "synth_generator_loss"]
