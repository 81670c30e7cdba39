"""The Winograd convolution (jaxres.winograd, compute.conv=winograd) against lax.conv_general_dilated."""

import contextlib
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxres import config, conv, models, winograd

DN = ("NHWC", "HWIO", "NHWC")
# Measured over the random shapes below (relative to the largest entry of the reference): float64 at most
# 8.6e-15 for F(4x4,3x3) and 1.1e-15 for F(2x2,3x3) in outputs and both gradients; float32 (against the float64
# reference) at most 4.0e-6 for F(4x4) and 3.0e-7 for F(2x2). The bounds leave a factor of 5-10.
BOUND = {("float64", 4): 1e-13, ("float64", 2): 1e-14, ("float32", 4): 2e-5, ("float32", 2): 3e-6}


def _ref(x, w, pads):
    return lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=DN, precision="highest")


def _shapes(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n, h, w = int(rng.integers(1, 3)), int(rng.integers(3, 14)), int(rng.integers(3, 14))
        c, o = int(rng.integers(16, 40)), int(rng.integers(1, 40))
        pads = tuple((int(rng.integers(0, 3)), int(rng.integers(0, 3))) for _ in range(2))
        yield rng, (n, h, w, c), (3, 3, c, o), pads


def _rel(a, b) -> float:
    return float(jnp.abs(a - b).max() / jnp.abs(b).max())


def _with_grads(f):
    """jit of (f(x, w), dx, dw) for the cotangent dy: one compilation instead of hundreds of eager ops."""
    def run(x, w, dy):
        y, back = jax.vjp(f, x, w)
        return (y, *back(dy))
    return jax.jit(run)


@pytest.mark.parametrize("m", sorted(winograd.TRANSFORMS))
def test_outputs_and_both_gradients_equal_lax_in_float64(m):
    with jax.enable_x64(True):
        worst = 0.0
        for rng, xs, ws, pads in _shapes(m, 6):
            x, w = jnp.asarray(rng.standard_normal(xs)), jnp.asarray(rng.standard_normal(ws))
            dy = jnp.asarray(rng.standard_normal(_ref(x, w, pads).shape))
            got = _with_grads(lambda x, w: winograd.conv(x, w, pads, m))(x, w, dy)
            want = _with_grads(lambda x, w: _ref(x, w, pads))(x, w, dy)
            assert got[0].shape == want[0].shape and got[0].dtype == jnp.float64
            errors = [_rel(a, b) for a, b in zip(got, want)]
            worst = max(worst, *errors)
            assert max(errors) < BOUND[("float64", m)], (xs, ws, pads, errors)
        assert worst > 0  # the algorithm rounds differently from the direct sum: it really ran


@pytest.mark.parametrize("m", sorted(winograd.TRANSFORMS))
def test_float32_is_within_its_rounding_of_the_exact_convolution(m):
    for rng, xs, ws, pads in _shapes(10 + m, 3):
        x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
        dy = rng.standard_normal(_ref(x, w, pads).shape).astype(np.float32)
        got = _with_grads(lambda x, w: winograd.conv(x, w, pads, m))(x, w, dy)
        with jax.enable_x64(True):
            want = _with_grads(lambda x, w: _ref(x, w, pads))(*(jnp.asarray(v, jnp.float64) for v in (x, w, dy)))
            errors = [_rel(jnp.asarray(g, jnp.float64), r) for g, r in zip(got, want)]
        assert all(g.dtype == jnp.float32 for g in got)
        assert max(errors) < BOUND[("float32", m)], (xs, ws, pads, errors)


def test_only_stride_one_3x3_convolutions_with_enough_channels_are_taken():
    s, p = (1, 1), ((1, 1), (1, 1))
    assert winograd.eligible((2, 8, 8, 16), (3, 3, 16, 4), jnp.float32, s, p)
    assert not winograd.eligible((2, 8, 8, 3), (3, 3, 3, 16), jnp.float32, s, p)      # a network's first layer
    assert not winograd.eligible((2, 8, 8, 16), (3, 3, 16, 4), jnp.float32, (2, 2), p)  # strided
    assert not winograd.eligible((2, 8, 8, 16), (1, 1, 16, 4), jnp.float32, s, ((0, 0), (0, 0)))
    assert not winograd.eligible((2, 8, 8, 16), (3, 3, 16, 4), jnp.bfloat16, s, p)
    assert not winograd.eligible((2, 8, 8, 16), (3, 3, 16, 4), jnp.float32, s, ((3, 0), (1, 1)))


@pytest.fixture
def backend():
    with contextlib.ExitStack() as stack:
        yield lambda name: stack.enter_context(conv.forced(name))


def test_the_backend_trains_the_seed_networks_like_the_direct_convolution(backend):
    """compute.conv=winograd: the networks' loss and every parameter gradient as with lax's convolutions."""
    x = jnp.asarray(np.random.default_rng(0).random((4, 12, 12, 3), np.float32))
    for name in ("seed_cnn", "seed_resnet"):
        model = models.get_model(name)
        params = model.init(jax.random.key(0), x, train=False)["params"]
        loss = lambda p: (model.apply({"params": p}, x, train=False) ** 2).mean()  # noqa: E731
        out, convolutions = {}, {}
        for b in ("xla", "winograd"):
            backend(b)
            out[b] = jax.jit(jax.value_and_grad(loss))(params)
            convolutions[b] = jax.jit(jax.grad(loss)).lower(params).as_text().count("stablehlo.convolution")
        # every 32/64-channel convolution and both its gradients become GEMMs; at most the stem's passes are
        # left as convolutions (none where the stem goes to oneDNN)
        assert convolutions["xla"] >= 10 and convolutions["winograd"] <= 2, convolutions
        assert abs(float(out["winograd"][0]) - float(out["xla"][0])) < 1e-6 * abs(float(out["xla"][0])) + 1e-9
        for g, r in zip(jax.tree.leaves(out["winograd"][1]), jax.tree.leaves(out["xla"][1])):
            assert float(jnp.linalg.norm(g - r)) <= 1e-4 * float(jnp.linalg.norm(r)) + 1e-9, name


def test_winograd_is_a_compute_setting_of_the_run_identity():
    a = config.RunConfig(compute=config.ComputeConfig(conv="winograd"))
    b = config.RunConfig(compute=config.ComputeConfig(conv="onednn"))
    assert config.run_name(a) != config.run_name(b) and config.identity(a) != config.identity(b)
    assert config.get(a, "compute.conv") == "winograd"


def test_the_run_header_says_which_convolutions_winograd_takes(backend):
    backend("winograd")
    assert conv.backend() == "winograd"
    text = conv.describe()
    assert text.startswith("winograd (F(4x4,3x3)") and "the others: " in text
    assert conv.direct_backend() in ("onednn", "xla-swapped", "xla")
