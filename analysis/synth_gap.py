"""The synthesizer's score gap on a finished study run, for the run's synthesizer or a
variant trained with config overrides: ``baseline-beta-finetune``'s mean score on random
synthetic nodules (the stress stage's Table 4 "Randomly sampled nodules": test-fold
backgrounds, the diameter filter, ``stress.seed``) minus its mean on the clean real test
positives (Table 5 "0.0 uniform noise"), with the report's 95% bootstrap interval
(``evaluation.bootstrap.difference_interval``: the two score arrays resampled independently,
``eval.bootstrap`` times), and what the low scores are (compact vs fragmented samples,
correlation with peak intensity).

    python analysis/synth_gap.py --config configs/demo.py --workdir runs/demo
    python analysis/synth_gap.py --config configs/demo.py --workdir runs/demo \\
        --train_to /tmp/synth_kl --config.synth.lambda_kl=3e-3

Without ``--train_to`` the run's ``synth`` checkpoint is scored; with it, a synthesizer is
trained there (``train_synth`` on the run's training cut-outs) with the overrides. The
FPR is always the run's. Prints one JSON line (``--json`` also writes it).
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags  # noqa: E402

from nodulejax.runtime.cli import print_json_line, run_main  # noqa: E402


def _define(fv):
    flags.DEFINE_string("workdir", None, "finished study run folder", flag_values=fv)
    flags.DEFINE_string("train_to", None, "train a synthesizer variant in this folder "
                        "(default: score the run's synth checkpoint)", flag_values=fv)
    flags.DEFINE_string("json", None, "also write the result here", flag_values=fv)
    return ["workdir"]


def _main(fv) -> int:
    import numpy as np

    from nodulejax.adversarial.attacks import score_patches
    from nodulejax.adversarial.synthetic import synthesize_filtered
    from nodulejax.data.backgrounds import background_patches
    from nodulejax.data.patchsets import nodule_cutouts
    from nodulejax.evaluation.bootstrap import difference_interval
    from nodulejax.evaluation.stress import benchmark_positives
    from nodulejax.models.classifier import load_fpr, load_generator
    from nodulejax.runtime.batching import map_batches
    from nodulejax.runtime.keys import STREAMS, item_keys, stream_key
    from nodulejax.study.context import Study
    from nodulejax.train.synth import compact_flags, synth_quality, train_synth

    c = fv["config"].value
    study = Study(c, fv["workdir"].value)
    cut = nodule_cutouts(study.scans("train"), int(c.synth.patch_size),
                         min_diameter_mm=float(c.synth.get("train_min_diameter_mm", 0.0)))
    if fv["train_to"].value:  # trains (or resumes) there, writing its latent fit too
        train_synth(c, fv["train_to"].value, study.scans("train"), cutouts=cut)
    gen = load_generator(c, fv["train_to"].value or study.workdir)  # c.synth.sampling's codes
    q = synth_quality(c, gen.variables["params"], cut, stream_key(int(c.seed), "synth/quality"))
    fpr = load_fpr(c, study.workdir, "baseline-beta-finetune")
    s, p, bs = c.stress, int(c.fpr.patch_size), int(c.pgd.batch_size)
    scans = study.scans("test")
    neg, _, _ = background_patches(scans, p, int(s.negatives_per_scan), int(s.seed),
                                   salt=STREAMS["backgrounds/stress"])
    pos = benchmark_positives(scans, p, float(c.eval.get("min_diameter_mm", 0.0)))
    items = np.arange(int(s.num_synthetic))
    keys = item_keys(int(s.seed), STREAMS["stress/synthetic"], items)
    dmin = float(s.get("min_diameter_mm", c.synth.min_diameter_mm))
    r = map_batches(lambda k, i: synthesize_filtered(k, fpr, gen, neg[i], c, search=False,
                                                     min_diameter_mm=dmin),
                    (keys, items % len(neg)), bs)
    ok = r["ok_random"]
    syn, real = score_patches(fpr, r["x_random"][ok], bs), score_patches(fpr, pos, bs)
    gap = float(syn.mean() - real.mean())
    lo, hi = difference_interval(syn, real, int(c.eval.bootstrap),
                                 (int(c.seed), STREAMS["report/synth_gap"]))
    rise = r["x_random"][ok] - neg[(items % len(neg))[ok]]  # the fused nodule over its background
    frag = ~compact_flags(rise > 0.05)  # scattered, not one object
    peak = rise.max(axis=(1, 2, 3))
    out = {"workdir": study.workdir, "trained_to": fv["train_to"].value,
           "gap": round(gap, 4), "ci": [round(lo, 4), round(hi, 4)],
           "synthetic_mean": round(float(syn.mean()), 4), "n_synthetic": int(len(syn)),
           "real_mean": round(float(real.mean()), 4), "n_real": int(len(real)),
           "fragment_fraction": round(float(frag.mean()), 3),
           "score_compact": round(float(syn[~frag].mean()), 4) if (~frag).any() else None,
           "score_fragment": round(float(syn[frag].mean()), 4) if frag.any() else None,
           "corr_score_peak": round(float(np.corrcoef(syn, peak)[0, 1]), 3),
           "corr_score_diameter": round(float(np.corrcoef(syn, r["diam_random"][ok])[0, 1]), 3),
           "quality": q}
    print_json_line(out, fv["json"].value)
    return 0


def main(argv=None) -> int:
    return run_main("analysis/synth_gap.py", _define, _main, argv, doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
