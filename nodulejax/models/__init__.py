"""The networks (flax modules) and the logic beside them: layers, ResUNet, RPN, DenseUNet, VAE,
critic, boxes, output heads, the config -> model builders, trained-model handles, Table 2."""

from __future__ import annotations

from nodulejax.models import (
           boxes,
           build,
           classifier,
           critic,
           denseunet,
           heads,
           layers,
           resunet,
           rpn,
           summary,
           vae,
)
from nodulejax.models.boxes import (
           anchor_sizes_vox,
           box_iou,
           decode_boxes,
           encode_boxes,
           heatmap_peaks,
           local_maxima,
           make_anchors,
           match_anchors,
           nms_boxes,
           nms_points,
)
from nodulejax.models.build import (
           cg_model,
           critic_model,
           fpr_model,
           fpr_prob_fn,
           rpn_model,
           vae_model,
)
from nodulejax.models.classifier import FPRHandle, GenHandle, load_fpr, load_generator
from nodulejax.models.critic import Critic, SNConv3D, SNDense, from_config, spectral_norm_estimate
from nodulejax.models.denseunet import DenseBlock, DenseUNet3D, NormActConv, group_norm
from nodulejax.models.heads import (
           FPR_HEADS,
           beta_params,
           beta_prob,
           beta_uncertainty,
           check_head,
           fpr_prob,
)
from nodulejax.models.layers import (
           Conv3D,
           GroupNorm,
           UpConv3D,
           avg_pool3d,
           conv3d,
           count_macs,
           global_avg_pool3d,
           max_pool3d,
           resolve_conv_impl,
           same_pads,
           set_default_conv_impl,
           upsample3d,
           voxel_shuffle,
)
from nodulejax.models.resunet import (
           GNReLU,
           ResBlock,
           ResUNet3D,
           build_resunet,
           level_widths,
           upsample_to,
)
from nodulejax.models.rpn import ResUNetRPN, RPNHead, anchors_for, build_rpn, rpn_proposals
from nodulejax.models.summary import (
           build_fpr,
           count_params,
           format_table,
           summarize,
           xla_macs,
)
from nodulejax.models.vae import (
           VAE,
           AggregatePriorGenerator,
           aggregate_gaussian,
           latent_variables,
           reparameterize,
)

__all__ = ["boxes", "anchor_sizes_vox", "make_anchors", "box_iou", "encode_boxes", "decode_boxes",
           "match_anchors", "nms_boxes", "nms_points", "local_maxima", "heatmap_peaks", "layers",
           "set_default_conv_impl", "resolve_conv_impl", "same_pads", "conv3d", "Conv3D",
           "GroupNorm", "max_pool3d", "avg_pool3d", "global_avg_pool3d", "upsample3d",
           "voxel_shuffle", "UpConv3D", "count_macs", "critic", "spectral_norm_estimate",
           "SNConv3D", "SNDense", "Critic", "from_config", "denseunet", "group_norm",
           "NormActConv", "DenseBlock", "DenseUNet3D", "heads", "FPR_HEADS", "check_head",
           "beta_params", "beta_prob", "beta_uncertainty", "fpr_prob", "resunet", "level_widths",
           "upsample_to", "GNReLU", "ResBlock", "ResUNet3D", "build_resunet", "rpn", "RPNHead",
           "ResUNetRPN", "anchors_for", "rpn_proposals", "build_rpn", "vae", "VAE",
           "reparameterize", "AggregatePriorGenerator", "aggregate_gaussian", "latent_variables",
           "build", "cg_model",
           "rpn_model", "fpr_model", "vae_model",
           "critic_model", "fpr_prob_fn", "classifier", "FPRHandle", "GenHandle", "load_fpr",
           "load_generator", "summary", "count_params", "xla_macs", "summarize", "build_fpr",
           "format_table"]
