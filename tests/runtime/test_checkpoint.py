"""nodulejax.runtime.checkpoint: bitwise round trip, config guard, retention, best, corruption."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nodulejax.errors import CheckpointError
from nodulejax.runtime.checkpoint import (
    ModelCheckpoints,
    config_diff,
    load_params,
    model_dir,
    restore_latest,
)

CFG = {"seed": 0, "fpr": {"lr": 1e-3, "steps": 100, "block_layers": [2, 2]},
       "ckpt": {"keep": 3}, "train": {"log_every": 10}}


def _cfg(**over):
    import copy

    c = copy.deepcopy(CFG)
    for path, v in over.items():
        block, field = path.split("__")
        c[block][field] = v
    return c


def _state(scale=1.0):
    params = {"w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4) * scale + 0.1,
              "b": jnp.full((4,), scale, jnp.float32)}
    opt = optax.adam(1e-3)
    return {"params": params, "opt": opt.init(params), "count": jnp.int32(7),
            "typed_key": jax.random.key(5), "raw_key": jax.random.PRNGKey(9),
            "halfs": jnp.linspace(0, 1, 5, dtype=jnp.bfloat16)}


def _equal_bitwise(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb, strict=True):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(x) == jax.random.key_impl(y)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_model_dir_names(tmp_path):
    assert model_dir(str(tmp_path), "fpr", "baseline-ce").endswith("checkpoints/fpr_baseline-ce")
    assert model_dir(str(tmp_path), "fpr_augmented", "beta+syn").endswith(
        "checkpoints/fpr_augmented_beta+syn")
    assert model_dir(str(tmp_path), "cg").endswith("checkpoints/cg")
    assert model_dir(str(tmp_path), "fpr", "baseline-ce") != model_dir(str(tmp_path), "fpr",
                                                                       "beta+syn")
    for bad in ("../x", "a/b", "", "x y"):
        with pytest.raises(CheckpointError):
            model_dir(str(tmp_path), bad)


def test_roundtrip_bitwise_with_keys_and_meta(tmp_path):
    st = _state()
    run_key = jax.random.key(123, impl="rbg")
    with ModelCheckpoints(str(tmp_path / "m"), config=CFG, async_save=False) as m:
        assert m.restore_latest(st) is None
        m.save(10, st, key=run_key, data_position=10, loop_state={"best": 0.5, "bad_evals": 1},
               metrics={"loss": 0.25})
    template = jax.tree.map(jnp.zeros_like, st)  # values must come from disk, not template
    with ModelCheckpoints(str(tmp_path / "m"), config=CFG) as m:
        r = m.restore_latest(template)
    _equal_bitwise(r.state, st)
    assert r.step == 10 and r.data_position == 10
    assert r.loop_state == {"best": 0.5, "bad_evals": 1} and r.metrics == {"loss": 0.25}
    assert str(jax.random.key_impl(r.key)) == str(jax.random.key_impl(run_key))
    np.testing.assert_array_equal(jax.random.key_data(r.key), jax.random.key_data(run_key))
    raw = jax.random.PRNGKey(77)  # raw uint32 run key round trip
    with ModelCheckpoints(str(tmp_path / "m2"), config=CFG, async_save=False) as m:
        m.save(1, st, key=raw)
        r2 = m.restore_latest(st)
    assert r2.key.dtype == jnp.uint32 and np.array_equal(r2.key, raw)


def test_config_change_is_refused_naming_fields(tmp_path):
    st = _state()
    d = str(tmp_path / "m")
    with ModelCheckpoints(d, config=CFG, async_save=False) as m:
        m.save(3, st)
    changed = _cfg(fpr__lr=3e-4, fpr__block_layers=[2, 3])
    changed["fpr"]["new_field"] = 1
    with ModelCheckpoints(d, config=changed) as m:
        with pytest.raises(CheckpointError) as e:
            m.restore_latest(st)
    msg = str(e.value)
    for field in ("fpr.lr", "fpr.block_layers", "fpr.new_field"):
        assert field in msg
    assert "0.001" in msg and "0.0003" in msg and "ckpt" not in msg
    # run length, logging and checkpoint cadence may change
    ok = _cfg(fpr__steps=500, train__log_every=1, ckpt__keep=1)
    assert config_diff(CFG, ok) == []
    with ModelCheckpoints(d, config=ok) as m:
        assert m.restore_latest(st).step == 3
    assert restore_latest(str(tmp_path), "nothing_here", st, CFG) is None
    # a model compares only the fields it depends on (relevant_fields)
    other_stage = dict(CFG, cg={"lr": 9.0})  # another stage's block changed
    assert config_diff(CFG, other_stage) != []
    with ModelCheckpoints(d, config=other_stage, relevant_fields=("seed", "fpr.*")) as m:
        assert m.restore_latest(st).step == 3
    with ModelCheckpoints(d, config=changed, relevant_fields=("seed", "fpr.*")) as m:
        with pytest.raises(CheckpointError, match=r"fpr\.lr"):
            m.restore_latest(st)


def test_keep_latest_n(tmp_path):
    st = _state()
    with ModelCheckpoints(str(tmp_path / "m"), config=CFG, keep=2) as m:
        for s in range(1, 6):
            m.save(s, st, data_position=s)
        m.wait()
        assert m.all_steps() == [4, 5] and m.latest_step() == 5
        assert not m.save(5, st)  # same step twice is a no-op


@pytest.mark.parametrize("mode,expect", [("max", 2), ("min", 1)])
def test_best_by_metric_and_load_params(tmp_path, mode, expect):
    wd = str(tmp_path)
    with ModelCheckpoints(model_dir(wd, "fpr", "x"), config=CFG, keep=1, best_metric="auc",
                          best_mode=mode) as m:
        for s, auc in [(1, 0.5), (2, 0.9), (3, 0.7)]:
            m.save(s, _state(s), data_position=s)
            m.save_best(s, _state(s), metrics={"auc": auc, "loss": 1.0})
        m.wait()
        assert m.best_step() == expect and m.all_steps() == [3]
    best = load_params(wd, "fpr_x", which="best")
    latest = load_params(wd, "fpr_x", which="latest")
    np.testing.assert_array_equal(best["w"], _state(expect)["params"]["w"])
    np.testing.assert_array_equal(latest["w"], _state(3)["params"]["w"])


def test_load_params_falls_back_to_latest_and_raises_when_missing(tmp_path):
    wd = str(tmp_path)
    with pytest.raises(CheckpointError, match="no best checkpoint"):
        load_params(wd, "cg")
    with ModelCheckpoints(model_dir(wd, "cg"), config=CFG, async_save=False) as m:
        m.save(4, _state(2.0))
    np.testing.assert_array_equal(load_params(wd, "cg")["b"], _state(2.0)["params"]["b"])
    with pytest.raises(CheckpointError):
        load_params(wd, "cg", which="newest")


def _files(d):
    for root, _, names in os.walk(d):
        for n in names:
            yield os.path.join(root, n)


def test_corrupt_or_partial_checkpoint_raises(tmp_path):
    st = _state()
    d = str(tmp_path / "m")
    with ModelCheckpoints(d, config=CFG, async_save=False) as m:
        m.save(1, st)
        m.save(2, st)
    # corrupt every array file of step 2
    for f in _files(os.path.join(d, "latest", "2", "state")):
        with open(f, "wb") as fh:
            fh.write(b"\x00garbage")
    with ModelCheckpoints(d, config=CFG) as m:
        with pytest.raises(CheckpointError, match="latest/2"):
            m.restore_latest(st)
        assert m.restore(1, st).step == 1  # the older one still reads
    # a partial step (meta missing) is refused too
    os.remove(next(f for f in _files(os.path.join(d, "latest", "1", "meta"))))
    with ModelCheckpoints(d, config=CFG) as m:
        with pytest.raises(CheckpointError, match="latest/1"):
            m.restore(1, st)
    # a template of another structure is refused
    with ModelCheckpoints(str(tmp_path / "n"), config=CFG, async_save=False) as m:
        m.save(1, st)
        with pytest.raises(CheckpointError):
            m.restore_latest({"params": {"w": jnp.zeros((5, 5))}})


def test_params_trained_on_two_devices_load_on_one(tmp_path):
    """A state replicated over the session's two host devices (data-parallel training) loads
    with load_params in the session (as uncommitted arrays) and in a one-device process
    (orbax alone refuses a checkpoint of another topology without a target)."""
    import subprocess
    import sys

    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    wd = str(tmp_path)
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    state = jax.device_put(_state(3.0), NamedSharding(mesh, PartitionSpec()))
    with ModelCheckpoints(model_dir(wd, "fpr", "x"), config=CFG, async_save=False) as m:
        m.save(2, state)
    here = load_params(wd, "fpr_x", which="latest")
    np.testing.assert_array_equal(here["w"], _state(3.0)["params"]["w"])
    assert not here["w"].committed
    code = ("import jax, numpy as np; from nodulejax.runtime.checkpoint import load_params; "
            f"p = load_params({wd!r}, 'fpr_x', 'latest'); "
            "print(jax.device_count(), np.asarray(p['w']).sum())")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1")
    env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["1", str(np.float32(_state(3.0)["params"]["w"].sum()))]
