"""nodulejax.study.deviations: the report's "Deviations from the paper" table."""

from configs import demo, paper, tiny
from nodulejax.study import deviations


def test_table_covers_every_listed_topic_once():
    topics = [t for t, *_ in deviations.DEVIATIONS]
    assert len(topics) == len(set(topics))
    for need in ("Stress-test protocol", "Image PGD radius", "Benchmark nodules",
                 "Candidates per scan", "KL annealing", "Diameter filters", "GGO fine-tune",
                 "RPN settings", "uniform-noise points", "latent PGD radius", "Normalisation",
                 "Latent ball", "L1 term", "Uniform noise of magnitude", "Synthesizer optimiser",
                 "Fusion mask"):
        assert any(need in t for t in topics), need
    assert {s for *_, s in deviations.DEVIATIONS} <= {"fixed", "stated", "reading"}


def test_paper_config_has_the_paper_values_and_the_demo_states_its_own():
    assert deviations.config_deviations(paper.get_config()) == []
    dev = {k: (p, v) for k, p, v in deviations.config_deviations(demo.get_config())}
    assert dev["pgd.image_eps"] == (0.15, 0.03)
    assert dev["eval.min_diameter_mm"] == (6.0, 4.0)
    assert dev["stress.min_diameter_mm"] == (6.0, 4.0)
    assert dev["synth.sampling"] == ("prior", "aggregate")  # a text setting, compared as text
    assert dev["synth.lambda_kl"] == (1e-5, 1e-3)
    md = deviations.deviations_markdown(demo.get_config())
    assert "| pgd.image_eps | 0.15 | 0.03 |" in md and "| topic | paper |" in md
    assert "| synth.sampling | prior | aggregate |" in md
    assert "| eval.min_diameter_mm | 6 | 0 |" in deviations.deviations_markdown(
        tiny.get_config())
    assert "uses the paper's values" in deviations.deviations_markdown(paper.get_config())


def test_no_cell_breaks_the_markdown_table():
    for row in deviations.DEVIATIONS:
        assert all("|" not in cell for cell in row), row
