"""nodulejax.train.loop / sampler / sharding: exact resume after SIGKILL, 8 devices == 1,
SIGTERM saves, config guard, early stopping, logs; deterministic sampling and prefetch."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from nodulejax.errors import CheckpointError
from nodulejax.runtime.checkpoint import ModelCheckpoints, model_dir
from nodulejax.train.loop import fit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tests", "train", "fit_script.py")
from tests.train import fit_script  # noqa: E402

STEPS = 12  # checkpoints every 4 (fit_script.make_config), evaluations every 4


# ------------------------------------------------------------------ subprocess runs
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    e.update(
        PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        # later processes reuse the first one's compiled executables (same bits, less time)
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jaxcache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    return e


def _run(env, *args, timeout=180):
    p = subprocess.run([sys.executable, SCRIPT, *args], env=env, capture_output=True,
                       text=True, encoding="utf-8", errors="replace", timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _start(env, wd, stop_at, ready):
    return subprocess.Popen([sys.executable, SCRIPT, "--workdir", wd, "--steps", str(STEPS),
                             "--stop-at", str(stop_at), "--ready-file", ready], env=env,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not os.path.exists(path):
        if proc.poll() is not None:
            raise AssertionError(f"script exited early: {proc.stderr.read()[-3000:]}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("script never reached the kill step")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def chain(env, tmp_path_factory):
    """One interrupted history on 8 devices, then uninterrupted references (3 processes):

    A: fresh run, SIGTERM after step 6 -> saves step 6, exits 143;
    B: resumes from 6, SIGKILL after step 10 (checkpoint 8 may or may not be complete);
    C: resumes and finishes step 12, then trains fresh uninterrupted copies on 1 and 8 devices.
    """
    d = tmp_path_factory.mktemp("chain")
    wd, ready, out = str(d), str(d / "ready"), str(d / "final.npz")
    res = {}
    proc = _start(env, wd, 6, ready)
    _wait_for(ready, proc)
    os.kill(proc.pid, signal.SIGTERM)
    os.remove(ready)  # let the step finish; the loop then sees the signal
    proc.wait(timeout=60)
    res["sigterm_rc"] = proc.returncode
    with ModelCheckpoints(model_dir(f"{wd}/run", "tiny"), config=fit_script.make_config()) as m:
        res["after_sigterm"] = m.all_steps()
    proc = _start(env, wd, 10, ready)
    _wait_for(ready, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    res["sigkill_rc"] = proc.returncode
    _run(env, "--workdir", wd, "--steps", str(STEPS), "--out", out, "--compare-devices", "8")
    res["info"] = json.load(open(out + ".json"))
    res["final"] = dict(np.load(out))
    res["fresh"] = dict(np.load(out + ".fresh.npz"))
    res["log"] = [json.loads(line) for line in open(f"{wd}/run/logs/tiny/metrics.jsonl")]
    return res


def test_sigterm_saves_the_current_step_and_exits(chain):
    assert chain["sigterm_rc"] == 128 + signal.SIGTERM
    assert chain["after_sigterm"][-1] == 6  # not a multiple of ckpt.every=4: saved on SIGTERM


def test_sigkill_then_resume_is_bitwise_equal(chain):
    assert chain["sigkill_rc"] == -signal.SIGKILL
    info, ref = chain["info"], chain["fresh"]
    assert info["resumed_from"] in (6, 8) and info["step"] == STEPS
    for k in ("w1", "b1", "w2", "b2"):
        assert np.array_equal(chain["final"][k], ref[f"n8_{k}"]), k  # bitwise
    # the log reads as one run: train lines at the same steps as an uninterrupted run
    assert [x["step"] for x in chain["log"] if x["split"] == "train"] == [3, 6, 9, 12]
    assert [x["step"] for x in chain["log"] if x["split"] == "val"] == [4, 8, 12]


def test_eight_devices_match_one_device(chain):
    ref = chain["fresh"]
    assert ref["n1_ndev"] == 1 and ref["n8_ndev"] == 8
    for k in ("w1", "b1", "w2", "b2"):
        np.testing.assert_allclose(ref[f"n8_{k}"], ref[f"n1_{k}"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(ref["n1_w1"], ref["init_w1"])  # it trained


# ------------------------------------------------------------------ in-process fit
@pytest.fixture(scope="module")
def tiny():
    cfg = fit_script.make_config()
    _, tx = fit_script.init_state(cfg)
    train_step, loss_fn = fit_script.make_train_step(tx)  # one function -> one compile
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
    return cfg, train_step, fit_script.make_batch_fn(cfg), mesh


def _fit(tiny, wd, steps, cfg=None, **kw):
    c0, train_step, batch_fn, mesh = tiny
    cfg = cfg or c0
    state, _ = fit_script.init_state(cfg)
    kw.setdefault("batch_fn", batch_fn)
    return fit(train_step, state, kw.pop("batch_fn"), num_steps=steps, workdir=wd,
               model_name="tiny", config=cfg, key=jax.random.key(0), mesh=mesh,
               progress=False, **kw)


def test_resume_into_other_config_is_refused_but_longer_run_is_allowed(tiny, tmp_path):
    wd = str(tmp_path)
    assert _fit(tiny, wd, 3).step == 3
    other = fit_script.make_config(lr=3e-4)
    with pytest.raises(CheckpointError, match=r"fpr\.lr"):
        _fit(tiny, wd, 3, cfg=other)
    longer = fit_script.make_config()
    longer.fpr.steps = 99  # run length may change
    r = _fit(tiny, wd, 5, cfg=longer)
    assert r.resumed_from == 3 and r.step == 5


def test_early_stopping_best_checkpoint_and_logs(tiny, tmp_path):
    wd = str(tmp_path)
    scores = iter([0.5, 0.9, 0.8, 0.7, 0.95])  # best at the 2nd eval, then 2 worse -> stop

    def eval_fn(state, step):
        return {"auc": next(scores)}

    r = _fit(tiny, wd, 10, eval_fn=eval_fn, eval_every=1, best_metric="auc", patience=2,
             log_every=1, lr_fn=lambda i: 0.5 ** i)
    assert r.stopped_early and r.step == 4 and r.best_step == 2 and r.best_metric == 0.9
    with ModelCheckpoints(model_dir(wd, "tiny"), config=tiny[0], best_metric="auc") as m:
        assert m.best_step() == 2 and m.latest_step() == 4
    again = _fit(tiny, wd, 10, eval_fn=eval_fn, eval_every=1, best_metric="auc", patience=2)
    assert again.stopped_early and again.step == 4 and again.resumed_from == 4  # no more steps
    recs = [json.loads(line) for line in open(f"{wd}/logs/tiny/metrics.jsonl")]
    assert [x["step"] for x in recs if x["split"] == "val"] == [1, 2, 3, 4]
    assert all(np.isfinite(x["loss"]) and x["steps_per_sec"] > 0
               for x in recs if x["split"] == "train" and x["step"] > 1)
    assert [x["lr"] for x in recs if x["split"] == "train"] == [1.0, 0.5, 0.25, 0.125]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(f"{wd}/logs/tiny"))


def test_error_in_data_saves_last_completed_step_and_propagates(tiny, tmp_path):
    wd = str(tmp_path)
    _, _, batch_fn, _ = tiny

    def broken(i):
        if i == 5:
            raise OSError("disk gone")
        return batch_fn(i)

    with pytest.raises(OSError, match="disk gone"):
        _fit(tiny, wd, 8, batch_fn=broken, prefetch=2)
    with ModelCheckpoints(model_dir(wd, "tiny"), config=tiny[0]) as m:
        assert m.latest_step() == 5
    assert _fit(tiny, wd, 8).resumed_from == 5


# ------------------------------------------------------------------ sampler


def test_fit_splits_the_batch_over_the_devices_that_divide_it():
    """Two CPU devices in the test session (conftest.py): a batch of 4 is split over both,
    one of 3 stays on one device instead of failing."""
    from nodulejax.runtime.sharding import devices_for_batch

    assert len(devices_for_batch(4)) == 2
    assert len(devices_for_batch(3)) == 1
    assert devices_for_batch(3)[0] == jax.devices()[0]
