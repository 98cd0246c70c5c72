"""The report's synthesizer section (nodulejax.study.report.synthesizer_markdown)."""

import numpy as np

from nodulejax.evaluation.bootstrap import difference_interval
from nodulejax.study.report import synthesizer_markdown


def test_synthesizer_section_gives_the_score_gap_with_its_bootstrap_interval():
    rng = np.random.default_rng(0)
    syn, real = rng.normal(0.5, 0.2, 400), rng.normal(0.8, 0.1, 100)
    st = {"table4": {"m": {"Randomly sampled nodules": {"mean": 0.5, "std": 0.2, "n": 400}}},
          "table5": {"m": {"0.0 uniform noise": {"mean": 0.8, "std": 0.1, "n": 100}}}}
    scores = {("table4", "m", "Randomly sampled nodules"): syn,
              ("table5", "m", "0.0 uniform noise"): real}
    q = {"num_cutouts": 40, "recon_l1": 0.0123, "num_prior_samples": 500,
         "prior_pass_rate": 0.25, "min_diameter_mm": 4.0, "prior_diameter_mm": [3.0, 5.0, 9.0],
         "real_diameter_mm": [5.0, 8.0, 12.0], "prior_peak": [0.2, 0.4, 0.6],
         "real_peak": [0.5, 0.7, 0.9]}
    text = "\n".join(synthesizer_markdown(q, st, model="m", scores=scores, n_samples=200,
                                          seed=(0, 303)))
    lo, hi = difference_interval(syn, real, 200, (0, 303))
    assert lo < -0.3 < hi
    assert "**-0.300**" in text and f"[{lo:+.3f}, {hi:+.3f}]" in text
    # without per-patch scores the gap is given without an interval
    bare = "\n".join(synthesizer_markdown(q, st, model="m"))
    assert "**-0.300** (paper" in bare
    assert "40 nodule cut-outs" in text and "25.0%" in text and "0.0123" in text
    assert "5.0 mm (10-90%: 3.0-9.0)" in text
    # without the stress stage the quality is still reported; without both, a note
    assert "gap" not in "\n".join(synthesizer_markdown(q, None, model="m"))
    assert synthesizer_markdown(None, None) == ["_synth or stress stage did not run._"]
