"""The report's synthesizer section (nodulejax.study.report.synthesizer_markdown)."""

import numpy as np

from nodulejax.study.report import synthesizer_markdown


def test_synthesizer_section_gives_the_score_gap_with_its_interval():
    st = {"table4": {"m": {"Randomly sampled nodules": {"mean": 0.5, "std": 0.2, "n": 400}}},
          "table5": {"m": {"0.0 uniform noise": {"mean": 0.8, "std": 0.1, "n": 100}}}}
    q = {"num_cutouts": 40, "recon_l1": 0.0123, "num_prior_samples": 500,
         "prior_pass_rate": 0.25, "min_diameter_mm": 4.0, "prior_diameter_mm": [3.0, 5.0, 9.0],
         "real_diameter_mm": [5.0, 8.0, 12.0], "prior_peak": [0.2, 0.4, 0.6],
         "real_peak": [0.5, 0.7, 0.9]}
    text = "\n".join(synthesizer_markdown(q, st, model="m"))
    half = 1.96 * np.sqrt(0.2**2 / 400 + 0.1**2 / 100)
    assert "**-0.300**" in text and f"[{-0.3 - half:+.3f}, {-0.3 + half:+.3f}]" in text
    assert "40 nodule cut-outs" in text and "25.0%" in text and "0.0123" in text
    assert "5.0 mm (10-90%: 3.0-9.0)" in text
    # without the stress stage the quality is still reported; without both, a note
    assert "gap" not in "\n".join(synthesizer_markdown(q, None, model="m"))
    assert synthesizer_markdown(None, None) == ["_synth or stress stage did not run._"]
