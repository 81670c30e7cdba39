"""Batch norm through oneDNN (jaxres.norms.BatchNorm on the onednn backend) against flax's nn.BatchNorm.

Both are compared with flax's batch norm in float64 on the same inputs: oneDNN's closed-form backward
sums with less cancellation than XLA's autodiff of the normalization, so its gradients are never further
from float64 than flax's float32 ones (observed: 1e-6 against up to 1e-2 for a scale or bias). Values and
statistics agree to float32 rounding; in bfloat16 to one bfloat16 rounding of the output (4e-3, as the
convolutions in tests/test_precision.py).
"""
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxres import conv, models, norms, onednn

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not onednn.load()[0], reason=f"oneDNN unavailable: {onednn.load()[1]}")


@pytest.fixture(autouse=True)
def use_onednn(monkeypatch):
    """oneDNN convolutions; $JAXRES_ONEDNN_NORM, which ``run`` sets, as it was before the test (monkeypatch's
    delenv of an unset variable records nothing: it leaked into later tests' run names in the same worker)."""
    monkeypatch.setenv(conv.ENV, "onednn")
    before = os.environ.pop(norms.ENV, None)
    yield
    os.environ.pop(norms.ENV, None)
    if before is not None:
        os.environ[norms.ENV] = before


class Block(nn.Module):
    """relu(batch_norm(x) + add), the way the models call it."""
    dtype: object = jnp.float32
    fused: str = "relu"

    @nn.compact
    def __call__(self, x, add):
        norm = norms.make_norm("batch", True, None, self.dtype)(x.shape[-1], name="bn")
        if self.fused == "none":
            return norm(x)
        return norm(x, add=add if self.fused == "add_relu" else None, relu=True)


def rel(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(a - ref) / (np.linalg.norm(ref) + 1e-300))


def run(dtype, fused, onednn_norm, x, add, r):
    """(y, the new batch statistics, gradients of x, add, scale and bias) of ``Block`` with the given setting."""
    os.environ[norms.ENV] = "1" if onednn_norm else "0"
    block = Block(dtype=dtype, fused=fused)
    variables = block.init(jax.random.key(0), x, add)
    params = jax.tree.map(lambda p: p + 0.3 * jnp.arange(p.size, dtype=p.dtype).reshape(p.shape) / p.size,
                          variables["params"])  # scale and bias away from 1 and 0
    xx, aa = (x.astype(dtype), add.astype(dtype)) if dtype != jnp.float64 else (x, add)

    def loss(params, x, add):
        y, upd = block.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, add,
                             mutable=["batch_stats"])
        return jnp.sum(y.astype(r.dtype) * r), (y, upd["batch_stats"])

    jaxpr = str(jax.make_jaxpr(jax.grad(loss, (0, 1, 2), has_aux=True))(params, xx, aa))
    assert ("jaxres_onednn_norm" in jaxpr) == bool(onednn_norm), jaxpr[-500:]
    (dp, dx, da), (y, stats) = jax.jit(jax.grad(loss, (0, 1, 2), has_aux=True))(params, xx, aa)
    return y, stats, dx, da, dp["bn"]["scale"], dp["bn"]["bias"]


@pytest.mark.parametrize("fused", ["none", "relu", "add_relu"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(8, 6, 6, 16), (16, 8, 8, 32), (4, 5, 7, 3)], ids=lambda s: "x".join(map(str, s)))
def test_onednn_batch_norm_equals_flax(shape, dtype, fused):
    if jnp.dtype(dtype).name not in onednn.dtypes():
        pytest.skip("no oneDNN bfloat16 on this CPU")
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(2.0, 3.0, size=shape), jnp.float64)  # a mean and a spread to remove
        add = jnp.asarray(rng.normal(size=shape), jnp.float64)
        r = jnp.asarray(rng.normal(size=shape), jnp.float64)
        ref = run(jnp.float64, fused, False, x, add, r)
        ours = run(dtype, fused, True, x, add, r)
        flax_ = run(dtype, fused, False, x, add, r)
    tol = 1e-5 if dtype == jnp.float32 else 4e-3
    assert ours[0].dtype == dtype
    names = ["y", "stats", "dx", "dadd", "dscale", "dbias"]
    for name, a, f, ref_ in zip(names, ours, flax_, ref):
        if name == "dadd" and fused != "add_relu":
            continue
        leaves = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(f), jax.tree_util.tree_leaves(ref_))
        for la, lf, lr in leaves:
            if name in ("y", "stats"):
                assert rel(la, lr) < tol, (name, rel(la, lr))
            assert rel(la, lr) <= rel(lf, lr) * 1.5 + tol, (name, rel(la, lr), rel(lf, lr))
            if name == "stats":
                assert la.dtype == jnp.float32  # running statistics stay float32


def test_the_models_use_it_only_in_training_on_one_device():
    model = models.get_model("resnet20")
    x = jnp.ones((4, 32, 32, 3))
    v = model.init(jax.random.key(0), x)
    train_jaxpr = str(jax.make_jaxpr(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(v))
    assert train_jaxpr.count("jaxres_onednn_norm_forward") == 10      # the stem and the first of each block
    assert train_jaxpr.count("jaxres_onednn_norm_add_forward") == 9   # each block's end: + shortcut, ReLU
    assert "jaxres_onednn_norm" not in str(jax.make_jaxpr(lambda v: model.apply(v, x))(v))  # evaluation
    pmapped = jax.make_jaxpr(lambda v: model.apply(v, x, train=True, axis_name="batch", mutable=["batch_stats"]),
                             axis_env=[("batch", 1)])(v)
    assert "jaxres_onednn_norm" not in str(pmapped)  # statistics over devices: flax's, averaged with pmean
    # the same parameters and statistics either way
    os.environ[norms.ENV] = "0"
    v_flax = model.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, v_flax) == jax.tree.map(jnp.shape, v)
    os.environ.pop(norms.ENV)


def test_jaxres_onednn_norm_0_keeps_flax_batch_norm():
    code = ("import jax, jax.numpy as jnp; from jaxres import models; m = models.get_model('resnet20'); "
            "x = jnp.ones((2, 32, 32, 3)); v = m.init(jax.random.key(0), x); "
            "print('jaxres_onednn_norm' in str(jax.make_jaxpr(lambda v: m.apply(v, x, train=True, "
            "mutable=['batch_stats']))(v)))")
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAXRES_CONV="onednn")
    for value, expected in (("0", "False"), ("1", "True")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             env=dict(env, **{norms.ENV: value}))
        assert out.stdout.strip() == expected, out.stderr[-2000:]
