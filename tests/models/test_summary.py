"""Table 2 complexity summary (nodulejax.models.summary)."""

import json

import jax
import jax.numpy as jnp
import pytest

from nodulejax.models.layers import Conv3D
from nodulejax.models.summary import PAPER_TABLE2, count_macs, count_params, main, xla_macs


def test_conv_counts_by_hand():
    x = jnp.zeros((1, 8, 8, 8, 3))
    m = Conv3D(5, 3, 1, impl="xla3d")
    v = jax.tree.map(lambda s: jnp.zeros(s.shape), jax.eval_shape(m.init, jax.random.key(0), x))
    assert count_params(v) == 27 * 3 * 5 + 5
    assert count_macs(m.apply, v, x) == 8**3 * 27 * 3 * 5  # every output, every tap
    # XLA counts only the taps inside the volume ('SAME' zero padding skipped): per axis the
    # 8 outputs see 3*8 - 2 = 22 valid taps; plus one add per output for the bias
    assert xla_macs(m.apply, v, x) == pytest.approx(22**3 * 3 * 5 + 8**3 * 5 / 2)
    m2 = Conv3D(4, 3, 2, impl="xla3d")
    v2 = jax.eval_shape(m2.init, jax.random.key(0), x)
    assert count_macs(m2.apply, v2, x) == 4**3 * 27 * 3 * 4  # stride 2: 4^3 outputs


def test_cli_json_paper_config_within_table2_tolerances(capsys):
    assert main(["--config", "configs/paper.py", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert set(ours) == {"resunet", "rpn", "fpr"}
    for key in ("resunet", "rpn", "fpr"):
        paper = PAPER_TABLE2[key]
        assert abs(ours[key]["params"] / paper["params"] - 1) <= 0.10, (key, ours[key])
        assert abs(ours[key]["gmacs"] / paper["gmacs"] - 1) <= 0.20, (key, ours[key])
    assert ours["rpn"]["params"] > ours["resunet"]["params"]  # backbone + head


def test_cli_table_on_small_config(capsys, tmp_path):
    cfg = tmp_path / "small.py"
    cfg.write_text("from configs import paper\n\ndef get_config(size='32'):\n"
                   "    c = paper.get_config()\n    c.cg.input_size = int(size)\n"
                   "    c.fpr.patch_size = 16\n    return c\n")
    assert main(["--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "| RPN |" in out and "143.92k" in out and "32^3" in out
    assert main(["--config", f"{cfg}:16", "--json"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert main(["--config", str(cfg), "--json"]) == 0
    big = json.loads(capsys.readouterr().out)
    # same parameters; conv MACs scale with the volume (8x from 16^3 to 32^3, strided and
    # full-resolution layers alike)
    assert small["resunet"]["params"] == big["resunet"]["params"]
    assert big["resunet"]["gmacs"] == pytest.approx(8 * small["resunet"]["gmacs"], rel=1e-9)
    assert big["rpn"]["gmacs"] == pytest.approx(8 * small["rpn"]["gmacs"], rel=1e-9)
