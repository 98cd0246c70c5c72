"""Training: the resumable loop, samplers, logging, and the CG, FPR, synthesizer and
augmentation trainers."""

from __future__ import annotations

from nodulejax.train import augment, cg, fpr, logger, loop, sampler, synth
from nodulejax.train.augment import (
           GROUPS,
           KIND_NAMES,
           NOISE,
           PERTURB,
           PLAIN,
           POISSON,
           SYN_PGD,
           SYN_RANDOM,
           GroupSource,
           build_sources,
           gather_batch,
           group_ratios,
           make_inloop_augment,
           max_counts,
)
from nodulejax.train.cg import (
           blob_sigma_vox,
           ggo_subset_types,
           heatmap_step,
           heatmap_targets,
           make_batch_fn,
           rpn_step,
           train_cg,
)
from nodulejax.train.fpr import (
           evaluate_fpr,
           fpr_scores,
           init_params,
           kl_anneal_steps_for,
           make_fpr_step,
           roc_auc,
           train_fpr_experiment,
           train_fpr_seg,
           transfer_params,
)
from nodulejax.train.logger import MetricLogger, truncate_jsonl
from nodulejax.train.loop import FitResult, fit
from nodulejax.train.sampler import (
           BalancedSampler,
           BatchIndices,
           IndexSampler,
           Prefetcher,
           aug_seeds,
           epoch_permutation,
           nested_ratios,
)
from nodulejax.train.synth import init_synth_state, make_synth_step, train_synth

__all__ = ["augment", "group_ratios", "build_sources", "gather_batch", "max_counts",
           "make_inloop_augment", "GroupSource", "GROUPS", "KIND_NAMES", "PLAIN", "SYN_RANDOM",
           "SYN_PGD", "PERTURB", "NOISE", "POISSON", "logger", "truncate_jsonl", "MetricLogger",
           "sampler", "BatchIndices", "IndexSampler", "BalancedSampler", "Prefetcher", "aug_seeds",
           "epoch_permutation", "nested_ratios", "loop", "FitResult", "fit", "cg",
           "blob_sigma_vox", "heatmap_targets", "heatmap_step", "rpn_step", "ggo_subset_types",
           "make_batch_fn", "train_cg", "fpr", "roc_auc", "evaluate_fpr", "fpr_scores",
           "transfer_params", "init_params", "train_fpr_seg", "make_fpr_step",
           "kl_anneal_steps_for", "train_fpr_experiment", "synth", "train_synth",
           "make_synth_step", "init_synth_state"]
